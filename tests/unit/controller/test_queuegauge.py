"""The live view's queue gauge against the activator's real admin app (metrics filtered by name)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from activator.admin import Health, admin_app
from activator.metrics import ActivatorMetrics
from controller.local.queuegauge import QueueGauge
from serving.platform import RevisionKey

HELLO = RevisionKey("default", "hello-00001")
OTHER = RevisionKey("default", "other-00001")


@pytest.fixture
async def admin() -> AsyncIterator[TestServer]:
    registry = CollectorRegistry()
    metrics = ActivatorMetrics(registry, lambda: [(HELLO, 7, 2), (OTHER, 0, 1)])
    metrics.for_revision(HELLO).wait.observe(0.2)
    health = Health(autoscaler_connected=lambda: True, synced=lambda: True)
    server = TestServer(admin_app(health, registry), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def test_gauge_reads_queued_requests_per_revision(admin: TestServer) -> None:
    async with aiohttp.ClientSession() as session:
        gauge = QueueGauge(str(admin.make_url("/metrics")), session)
        assert gauge.get(HELLO) is None, "nothing is known before the first scrape"
        await gauge.scrape()
    assert gauge.get(HELLO) == 7
    assert gauge.get(OTHER) == 0
    assert gauge.get(RevisionKey("default", "unknown-00001")) == 0


async def test_metrics_by_name_return_only_those_series(admin: TestServer) -> None:
    async with aiohttp.ClientSession() as session:
        url = admin.make_url("/metrics")
        async with session.get(url, params={"name[]": "activator_requests_queued"}) as response:
            only = await response.text()
        async with session.get(url) as response:
            everything = await response.text()
    assert 'activator_requests_queued{namespace="default",revision="hello-00001"} 7.0' in only
    assert "activator_request_wait_seconds" not in only
    assert "activator_requests_in_flight" not in only
    assert "activator_request_wait_seconds_bucket" in everything
    assert "activator_requests_in_flight" in everything


async def test_gauge_knows_nothing_while_the_activator_is_unreachable() -> None:
    async with aiohttp.ClientSession() as session:
        gauge = QueueGauge("http://127.0.0.1:9/metrics", session)
        await gauge.scrape()
    assert gauge.get(HELLO) is None
