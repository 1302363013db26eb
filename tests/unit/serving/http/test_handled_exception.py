"""The engine keeps its answers when the thread has an exception marked as handled while it parses.

A coroutine compiled with mypyc that suspends inside an `except` block leaves its exception marked as
handled for everything else the loop runs meanwhile (CPython swaps it out per coroutine; mypyc does not).
httptools hands a parser callback's exception over as the `__context__` of its own error, and raising that
error replaces the context with whatever is marked as handled, so an engine reading `__context__` answered a
refused request with 500 instead of 400 or 431 (and a marked 502 became an invalid response). The loop here
runs every callback with such an exception marked, as that leak does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from serving.http import Exchange
from tests.unit.serving.http import test_smuggling
from tests.unit.serving.http.rawhttp import RawClient, engine


class MarkedLoop(asyncio.SelectorEventLoop):
    """Runs every ready callback (protocol callbacks among them) with an exception marked as handled."""

    def _run_once(self) -> None:
        try:
            raise LookupError("marked as handled by a coroutine suspended elsewhere")
        except LookupError:
            super()._run_once()  # type: ignore[misc]  # asyncio's loop step, private but stable


async def refuse_all(ex: Exchange) -> None:
    await ex.respond(200)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=MarkedLoop) as runner:
        runner.run(scenario())


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 400, id="connect"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, id="two-hosts"),
        pytest.param(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400, id="http2-version"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 200 + b"\r\n", 431, id="too-many-headers"
        ),
    ],
)
def test_a_refused_request_keeps_its_status(request_bytes: bytes, status: int) -> None:
    async def scenario() -> None:
        async with engine(refuse_all) as port:
            client = await RawClient.connect(port)
            response = await client.request(request_bytes)
            assert response.status == status
            await client.close()

    run(scenario)


def test_an_app_refused_502_can_still_go_elsewhere() -> None:
    run(test_smuggling.test_marked_502_for_a_request_without_body_is_raised_and_the_exchange_can_go_elsewhere)
