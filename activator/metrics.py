"""The activator's Prometheus metrics, created against an injected registry.

Per revision: a histogram of how long requests waited for capacity (cold starts show up here), gauges of
queued and in-flight requests (read from the throttlers at scrape time, so the hot path pays nothing), and a
counter of responses by status code. Label children are bound once per revision (and status code).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from serving.platform import RevisionKey

WAIT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""From an already-warm pod (~1 ms) to Knative's default revision timeout (300 s)."""
LABELS: Final = ("namespace", "revision")

Occupancy = Callable[[], Iterable[tuple[RevisionKey, int, int]]]
"""Yields (revision, queued, in flight) for every known revision."""


def _occupancy_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    queued = GaugeMetricFamily(
        "activator_requests_queued", "Requests waiting in the activator for capacity.", labels=LABELS
    )
    in_flight = GaugeMetricFamily(
        "activator_requests_in_flight",
        "Requests the activator has sent to a pod and not yet finished.",
        labels=LABELS,
    )
    return queued, in_flight


class _OccupancyCollector(Collector):
    def __init__(self, occupancy: Occupancy) -> None:
        self._occupancy = occupancy

    def describe(self) -> Iterator[Metric]:
        """The series' names, so that the registry can serve them alone (`/metrics?name[]=`)."""
        yield from _occupancy_families()

    def collect(self) -> Iterator[Metric]:
        queued, in_flight = _occupancy_families()
        for key, waiting, running in self._occupancy():
            queued.add_metric([key.namespace, key.name], waiting)
            in_flight.add_metric([key.namespace, key.name], running)
        yield queued
        yield in_flight


class RevisionMetrics:
    """One revision's bound metric children."""

    __slots__ = ("_codes", "_key", "_requests", "wait")

    def __init__(self, key: RevisionKey, wait: Histogram, requests: Counter) -> None:
        self._key = key
        self.wait = wait.labels(key.namespace, key.name)
        self._requests = requests
        self._codes: dict[int, Counter] = {}

    def count(self, status: int) -> None:
        child = self._codes.get(status)
        if child is None:
            child = self._codes[status] = self._requests.labels(
                self._key.namespace, self._key.name, str(status)
            )
        child.inc()

    @property
    def codes(self) -> list[int]:
        """Status codes this revision has answered with."""
        return list(self._codes)


class ActivatorMetrics:
    def __init__(self, registry: CollectorRegistry, occupancy: Occupancy) -> None:
        self._wait = Histogram(
            "activator_request_wait_seconds",
            "Time requests waited in the activator for a pod with capacity.",
            LABELS,
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self._requests = Counter(
            "activator_requests",
            "Responses the activator finished, by status code.",
            (*LABELS, "code"),
            registry=registry,
        )
        registry.register(_OccupancyCollector(occupancy))

    def for_revision(self, key: RevisionKey) -> RevisionMetrics:
        return RevisionMetrics(key, self._wait, self._requests)

    def forget(self, key: RevisionKey, metrics: RevisionMetrics) -> None:
        """Drop a removed revision's series so the exposition does not grow without bound."""
        self._wait.remove(key.namespace, key.name)
        for code in metrics.codes:
            self._requests.remove(key.namespace, key.name, str(code))
