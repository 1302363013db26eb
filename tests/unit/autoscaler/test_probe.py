from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from autoscaler.probe import AssumeActivatorInPath, HttpActivatorProbe
from serving.clock import FakeClock


@pytest.fixture
async def activator() -> AsyncIterator[tuple[str, list[dict[str, str]], dict[str, int]]]:
    seen: list[dict[str, str]] = []
    answer = {"status": 200}

    async def handle(request: web.Request) -> web.Response:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        if answer["status"] != 200:
            return web.Response(status=answer["status"])
        if request.headers.get("K-Network-Probe") == "activator":
            return web.Response(text="activator")
        return web.Response(text="something else")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen, answer
    finally:
        await runner.cleanup()


async def test_probe_checks_the_activator_and_caches_for_a_second(
    activator: tuple[str, list[dict[str, str]], dict[str, int]],
) -> None:
    url, seen, answer = activator
    clock = FakeClock(100.0)
    async with aiohttp.ClientSession() as session:
        probe = HttpActivatorProbe(session, url, clock.now)
        assert await probe()
        assert seen[0]["k-network-probe"] == "activator"
        assert seen[0]["user-agent"] == "Knative-Autoscaling-Probe"
        answer["status"] = 503
        assert await probe()  # cached
        assert len(seen) == 1
        clock.advance(1.0)
        assert not await probe()


async def test_probe_fails_when_nothing_listens() -> None:
    async with aiohttp.ClientSession() as session:
        assert not await HttpActivatorProbe(session, "http://127.0.0.1:1", FakeClock().now)()
    assert await AssumeActivatorInPath()()
