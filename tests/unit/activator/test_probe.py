"""The activator's probe of a pod's queue-proxy: Knative's headers, plus the revision's token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from activator.probe import HttpProbe
from serving.contract.probe import probe_token
from serving.platform import Pod, RevisionKey

KEY = RevisionKey("team", "hello-00001")


@pytest.fixture
async def queue() -> AsyncIterator[tuple[Pod, list[dict[str, str]]]]:
    """A stand-in queue-proxy that answers `queue` only to the revision's token, recording each probe."""
    seen: list[dict[str, str]] = []
    expected = probe_token("s3cret", KEY.namespace, KEY.name)

    async def healthz(request: web.Request) -> web.Response:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        ok = request.headers.get("K-Network-Probe-Token") == expected
        return web.Response(text="queue" if ok else "the app's answer")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield (
        Pod(name="p", host="127.0.0.1", port=port, stats_port=1, admin_port=1, ready=False, started_at=0),
        seen,
    )
    await runner.cleanup()


async def test_probes_carry_the_revisions_token(queue: tuple[Pod, list[dict[str, str]]]) -> None:
    pod, seen = queue
    async with aiohttp.ClientSession() as session:
        assert await HttpProbe(session, secret="s3cret").for_revision(KEY)(pod)
        assert not await HttpProbe(session, secret="other").for_revision(KEY)(pod)
        assert not await HttpProbe(session, secret="s3cret").for_revision(RevisionKey("team", "x"))(pod)
        assert not await HttpProbe(session).for_revision(KEY)(pod)
    assert seen[0]["k-network-probe"] == "queue"
    assert seen[0]["user-agent"] == "Knative-Activator-Probe"
    assert "k-network-probe-token" not in seen[3], "no secret, no token"
