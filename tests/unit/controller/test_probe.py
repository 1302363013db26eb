"""The controller's readiness probe of a pod and its diagnosis of a not-ready app, against real loopback
servers standing in for the queue-proxy and the app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from controller.local.runtime.pod import READY, PodPorts, ProbeResult
from controller.local.runtime.probe import QueueProxyProbe
from tests.fakes.process import free_port

Serve = Callable[[web.Application], Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Serve an app on a free loopback port; returns the port."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> int:
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port: int = runner.addresses[0][1]
        return port

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def probe() -> AsyncIterator[QueueProxyProbe]:
    async with aiohttp.ClientSession() as session:
        yield QueueProxyProbe(session)


def answering(status: int, body: str, path: str = "/") -> web.Application:
    async def handle(_: web.Request) -> web.Response:
        return web.Response(status=status, text=body)

    app = web.Application()
    app.router.add_get(path, handle)
    return app


def ports(user: int, serving: int) -> PodPorts:
    return PodPorts(user=user, serving=serving, admin=0, stats=0, metrics=0)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(200, "queue", READY, id="ready"),
        pytest.param(
            503,
            "the app is not ready\n",
            ProbeResult(False, "not ready (the queue-proxy answers 503 the app is not ready)", user=True),
            id="app-not-ready",
        ),
        pytest.param(
            503,
            "shutting down\n",
            ProbeResult(False, "answering the readiness probe with 503 shutting down"),
            id="draining",
        ),
    ],
)
async def test_queue_proxy_answers(
    probe: QueueProxyProbe, serve: Serve, status: int, body: str, expected: ProbeResult
) -> None:
    queue_proxy = await serve(answering(status, body))
    assert await probe(ports(free_port(), queue_proxy)) == expected


async def test_queue_proxy_not_listening(probe: QueueProxyProbe) -> None:
    port = free_port()
    assert await probe(ports(free_port(), port)) == ProbeResult(False, f"not listening on port {port}")


async def test_diagnosis_of_an_app_that_does_not_listen(probe: QueueProxyProbe) -> None:
    user = free_port()
    assert await probe.diagnose(ports(user, free_port()), None) == f"not listening on port {user}"
    assert await probe.diagnose(ports(user, free_port()), "/healthz") == f"not listening on port {user}"


@pytest.mark.parametrize(
    ("status", "http_path", "expected"),
    [
        pytest.param(
            500, "/healthz", "its readiness probe GET /healthz on port {port} answers 500", id="500"
        ),
        pytest.param(404, "/nope", "its readiness probe GET /nope on port {port} answers 404", id="404"),
        pytest.param(200, "/healthz", None, id="passes-now"),
        pytest.param(500, None, None, id="tcp-probe-listening"),
    ],
)
async def test_diagnosis_of_an_app_that_listens(
    probe: QueueProxyProbe, serve: Serve, status: int, http_path: str | None, expected: str | None
) -> None:
    user = await serve(answering(status, "", "/healthz"))
    found = await probe.diagnose(ports(user, free_port()), http_path)
    assert found == (None if expected is None else expected.format(port=user))
