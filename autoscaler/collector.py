"""A revision's load history: stable and panic windows of concurrency and of requests per second.

Scraped pod stats and the activator's pushed stats land in the same 1 s buckets; pods report total minus
proxied load because the activator reports the proxied part itself (Knative's rule, no double counting).
"""

from __future__ import annotations

from serving.autoscaling import CONCURRENCY, WEIGHTED_EXPONENTIAL, Aggregation, Metric
from serving.bucket import TimedBuckets, WeightedBuckets
from serving.stat import Stat


def _buckets(aggregation: Aggregation, window: float) -> TimedBuckets:
    if aggregation == WEIGHTED_EXPONENTIAL:
        return WeightedBuckets(window)
    return TimedBuckets(window)


class Collection:
    """The four windows of one revision.

    `scraped` says whether the revision's pods are scraped at all: with a target burst capacity of -1 the
    activator carries every request and is the only source, so an empty window means "no load", not "no data"
    (Knative's rule), and the decider decides on zeros.
    """

    __slots__ = ("_concurrency", "_concurrency_panic", "_rps", "_rps_panic", "aggregation", "scraped")

    def __init__(
        self, *, stable_window: float, panic_window: float, aggregation: Aggregation, scraped: bool = True
    ) -> None:
        self.aggregation = aggregation
        self.scraped = scraped
        self._concurrency = _buckets(aggregation, stable_window)
        self._concurrency_panic = _buckets(aggregation, panic_window)
        self._rps = _buckets(aggregation, stable_window)
        self._rps_panic = _buckets(aggregation, panic_window)

    def record(self, now: float, stat: Stat) -> None:
        """Record a pod total (from the scraper) or an activator report, minus its proxied part."""
        self.record_values(
            now,
            stat.average_concurrent_requests - stat.average_proxied_concurrent_requests,
            stat.request_count - stat.proxied_request_count,
        )

    def record_values(self, now: float, concurrency: float, rps: float) -> None:
        self._concurrency.record(now, concurrency)
        self._concurrency_panic.record(now, concurrency)
        self._rps.record(now, rps)
        self._rps_panic.record(now, rps)

    def resize(self, *, stable_window: float, panic_window: float, now: float) -> None:
        self._concurrency.resize(stable_window, now)
        self._concurrency_panic.resize(panic_window, now)
        self._rps.resize(stable_window, now)
        self._rps_panic.resize(panic_window, now)

    def stable_and_panic(self, metric: Metric, now: float) -> tuple[float, float] | None:
        """Stable and panic averages of `metric` at `now`, or None when there is nothing to decide on."""
        if metric == CONCURRENCY:
            stable, panic = self._concurrency, self._concurrency_panic
        else:
            stable, panic = self._rps, self._rps_panic
        if self.scraped and stable.is_empty(now):
            return None
        return stable.window_average(now), panic.window_average(now)
