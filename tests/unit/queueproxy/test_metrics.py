from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from queueproxy.config import Identity
from queueproxy.metrics import RequestMetrics, metrics_routes
from serving.http.endpoints import endpoints
from tests.unit.serving.http.rawhttp import RawClient, engine, get

IDENTITY = Identity(
    namespace="default", configuration="hello", revision="hello-00001", pod="pod-a", pod_ip="127.0.0.1"
)
LABELS = {
    "namespace_name": "default",
    "configuration_name": "hello",
    "revision_name": "hello-00001",
    "pod_name": "pod-a",
}


def test_requests_counted_by_code_and_class_with_latency() -> None:
    registry = CollectorRegistry()
    depth = [3]
    metrics = RequestMetrics(registry, IDENTITY, queue_depth=lambda: depth[0], in_flight=lambda: 5)
    metrics.observe(200, 0.002)
    metrics.observe(200, 0.004)
    metrics.observe(503, 0.0001)

    def value(name: str, **extra: str) -> float | None:
        return registry.get_sample_value(name, {**LABELS, **extra})

    assert value("queue_requests_total", response_code="200", response_code_class="2xx") == 2.0
    assert value("queue_requests_total", response_code="503", response_code_class="5xx") == 1.0
    assert value("queue_request_duration_seconds_count") == 3.0
    assert value("queue_request_duration_seconds_sum") == pytest.approx(0.0061)
    assert value("queue_request_duration_seconds_bucket", le="0.0025") == 2.0
    assert value("queue_depth") == 3.0
    depth[0] = 0
    assert value("queue_depth") == 0.0
    assert value("queue_in_flight_requests") == 5.0


async def test_the_metrics_port_serves_the_registry_in_the_text_format() -> None:
    registry = CollectorRegistry()
    metrics = RequestMetrics(registry, IDENTITY, queue_depth=lambda: 0, in_flight=lambda: 1)
    metrics.observe(200, 0.002)
    async with engine(endpoints(metrics_routes(registry))) as port:
        client = await RawClient.connect(port)
        response = await client.request(get("/metrics"))
        await client.close()
    assert response.status == 200
    assert response.header("content-type") == CONTENT_TYPE_LATEST
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.body.decode())
        for sample in family.samples
        if sample.name in ("queue_requests_total", "queue_in_flight_requests")
    }
    assert samples == {"queue_requests_total": 1.0, "queue_in_flight_requests": 1.0}
