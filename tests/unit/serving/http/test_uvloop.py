"""The same forwarding scenarios on uvloop, the production event loop (the other tests use asyncio's)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from tests.unit.serving.http import test_flow, test_forward, test_relay, test_server, test_upstream

Scenario = Callable[[], Coroutine[Any, Any, None]]


def scenarios() -> list[Any]:
    """Every argument-less test coroutine of the engine's scenario modules."""
    found = []
    for module in (test_forward, test_server, test_upstream, test_relay, test_flow):
        for name, function in vars(module).items():
            if (
                name.startswith("test_")
                and inspect.iscoroutinefunction(function)
                and not inspect.signature(function).parameters
            ):
                found.append(pytest.param(function, id=f"{module.__name__.rsplit('.', 1)[1]}.{name}"))
    return found


@pytest.mark.parametrize("scenario", scenarios())
def test_on_uvloop(scenario: Scenario) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
        runner.run(scenario())
