"""Counts and latency histograms kept as plain numbers on the request path.

A `LatencyTally` costs a short scan of the bucket bounds and a float addition per observation (compiled, no
lock: one event loop records); a `RequestTally` adds a list increment for the status code. A metrics
collector turns them into Prometheus families when scraped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

_CODES: Final = 600


class LatencyTally:
    """Durations in `le` buckets (the last one is +Inf) and their sum."""

    __slots__ = ("bounds", "buckets", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("bucket bounds must be increasing")
        # Floats, so that a bound given as 1 is labelled `le="1.0"`, as prometheus_client's own histograms do.
        self.bounds: tuple[float, ...] = tuple(float(bound) for bound in bounds)
        self.buckets: list[int] = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def time(self, seconds: float) -> None:
        index = 0
        for bound in self.bounds:  # short requests leave at the first bounds
            if seconds <= bound:  # `le` buckets include their bound
                break
            index += 1
        self.buckets[index] += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) per bucket, +Inf last."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.buckets, strict=True):
            total += count
            out.append((bound, total))
        return out

    def samples(self) -> list[tuple[str, float]]:
        """`cumulative` as a Prometheus histogram family takes its buckets: (`le` label, count)."""
        return [
            ("+Inf" if bound == float("inf") else repr(bound), float(total))
            for bound, total in self.cumulative()
        ]


class RequestTally(LatencyTally):
    """Requests answered, by status code, and their durations."""

    __slots__ = ("_codes", "_others")

    def __init__(self, bounds: Sequence[float]) -> None:
        super().__init__(bounds)
        # Counts of the status codes HTTP has (100-599) by index: cheaper per request than a dictionary.
        self._codes: list[int] = [0] * _CODES
        self._others: dict[int, int] = {}

    @property
    def by_status(self) -> dict[int, int]:
        """Requests answered so far, by status code (only codes that were answered)."""
        counts = {status: count for status, count in enumerate(self._codes) if count}
        counts.update(self._others)
        return counts

    def observe(self, status: int, seconds: float) -> None:
        if 0 <= status < _CODES:
            self._codes[status] += 1
        else:
            self._others[status] = self._others.get(status, 0) + 1
        self.time(seconds)
