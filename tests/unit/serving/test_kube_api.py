"""The Kubernetes adapter against an HTTP server on 127.0.0.1 that answers as the API server does when it
throttles (429 Too Many Requests with Retry-After, e.g. while a new CRD's watch cache initializes)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from serving.kube.api import REVISIONS, THROTTLE_ATTEMPTS, ApiError, Kube

Throttled = tuple[list[int], list[int], Kube]
"""How many requests to refuse (settable), the requests seen, the adapter."""


@pytest.fixture
async def throttled() -> AsyncIterator[Throttled]:
    """A server that answers the first `refusals[0]` requests 429, then lists no items; and a Kube on it."""
    refusals = [0]
    seen: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(1)
        if len(seen) <= refusals[0]:
            return web.json_response(
                {"kind": "Status", "reason": "TooManyRequests", "message": "storage is (re)initializing"},
                status=429,
                headers={"Retry-After": "0"},
            )
        return web.json_response({"kind": "RevisionList", "items": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    kube = Kube(client.ApiClient(configuration))
    try:
        yield refusals, seen, kube
    finally:
        await kube.close()
        await runner.cleanup()


async def test_a_throttled_request_is_retried_after_retry_after(throttled: Throttled) -> None:
    refusals, seen, kube = throttled
    refusals[0] = 3
    assert await kube.list(REVISIONS, "default") == {"kind": "RevisionList", "items": []}
    assert len(seen) == 4


async def test_throttling_that_does_not_end_surfaces_as_429(throttled: Throttled) -> None:
    refusals, seen, kube = throttled
    refusals[0] = THROTTLE_ATTEMPTS
    with pytest.raises(ApiError) as raised:
        await kube.get(REVISIONS, "default", "hello-00001")
    assert raised.value.status == 429
    assert "initializing" in raised.value.message
    assert len(seen) == THROTTLE_ATTEMPTS
