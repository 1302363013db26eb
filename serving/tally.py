"""Request counts by status and a latency histogram, kept as plain numbers on the request path.

A `RequestTally` costs a dictionary update, a short scan of the bucket bounds and a float addition per request
(compiled, no lock: one event loop records); a metrics collector turns it into Prometheus families when
scraped.
"""

from __future__ import annotations

from collections.abc import Sequence


class RequestTally:
    """Requests answered, by status code, and their durations in `le` buckets (the last one is +Inf)."""

    __slots__ = ("bounds", "buckets", "by_status", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("bucket bounds must be increasing")
        self.bounds: tuple[float, ...] = tuple(bounds)
        self.by_status: dict[int, int] = {}
        self.buckets: list[int] = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, status: int, seconds: float) -> None:
        by_status = self.by_status
        by_status[status] = by_status.get(status, 0) + 1
        index = 0
        for bound in self.bounds:  # short requests leave at the first bounds
            if seconds <= bound:  # `le` buckets include their bound
                break
            index += 1
        self.buckets[index] += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, requests at or below it) per bucket, +Inf last."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.buckets, strict=True):
            total += count
            out.append((bound, total))
        return out
