"""Prometheus request metrics of the queue-proxy, served on `:QUEUE_METRICS_PORT/metrics`.

`RequestMetrics` is a collector in an injected registry. Requests are recorded in its `tally` (compiled plain
numbers: no lock, no label lookup, as the handler runs on one event loop thread); labels are attached once per
scrape, when the families are built. Gauges are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from queueproxy.config import Identity
from serving.http import Exchange
from serving.http.endpoints import Endpoint
from serving.tally import RequestTally

# Knative's label names for the revision a pod belongs to.
_REVISION_LABELS: Final = ["namespace_name", "configuration_name", "revision_name", "pod_name"]

LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
"""Seconds; from sub-millisecond hellos to Knative's default 300 s request timeout."""


class RequestMetrics(Collector):
    """Counts and times proxied requests; health checks are not recorded."""

    __slots__ = ("_in_flight", "_queue_depth", "_revision", "tally")

    def __init__(
        self,
        registry: CollectorRegistry,
        identity: Identity,
        *,
        queue_depth: Callable[[], float],
        in_flight: Callable[[], float],
    ) -> None:
        self._revision = [identity.namespace, identity.configuration, identity.revision, identity.pod]
        self._queue_depth = queue_depth
        self._in_flight = in_flight
        self.tally = RequestTally(LATENCY_BUCKETS)
        registry.register(self)

    def observe(self, status: int, seconds: float) -> None:
        self.tally.observe(status, seconds)

    def collect(self) -> Iterator[Metric]:
        revision = self._revision
        requests = CounterMetricFamily(
            "queue_requests",
            "Requests answered, by response status code and class.",
            labels=[*_REVISION_LABELS, "response_code", "response_code_class"],
        )
        tally = self.tally
        for status, count in sorted(tally.by_status.items()):
            requests.add_metric([*revision, str(status), f"{status // 100}xx"], count)
        yield requests
        latency = HistogramMetricFamily(
            "queue_request_duration_seconds",
            "Time from arrival to the end of the response, queue wait included.",
            labels=_REVISION_LABELS,
        )
        latency.add_metric(revision, tally.samples(), tally.sum)
        yield latency
        depth = GaugeMetricFamily(
            "queue_depth",
            "Requests waiting for a slot in the breaker (containerConcurrency).",
            labels=_REVISION_LABELS,
        )
        depth.add_metric(revision, self._queue_depth())
        yield depth
        in_flight = GaugeMetricFamily(
            "queue_in_flight_requests",
            "Requests admitted or waiting, that is the concurrency the autoscaler sees.",
            labels=_REVISION_LABELS,
        )
        in_flight.add_metric(revision, self._in_flight())
        yield in_flight


def metrics_routes(registry: CollectorRegistry) -> dict[str, Endpoint]:
    """`GET /metrics`: the registry in Prometheus' text format."""

    async def metrics(exchange: Exchange) -> None:
        await exchange.respond(200, (("content-type", CONTENT_TYPE_LATEST),), generate_latest(registry))

    return {"/metrics": metrics}
