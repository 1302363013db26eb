"""Sliding maximum over decider ticks, for `scale-down-delay`: a lower desire applies only once every higher
one recorded within the delay has slid out of the window.

A descending-maxima deque: each record drops the entries it dominates, so `current` is O(1) and a record is
amortised O(1), as in Knative's max window.
"""

from __future__ import annotations

import math
from collections import deque


class MaxWindow:
    """Maximum of the values recorded in the last `duration` seconds, in slots of `granularity` seconds.

    Slots are `floor(now / granularity)`; several records in one slot keep the largest. Times must not go
    backwards.
    """

    __slots__ = ("_entries", "_granularity", "_size")

    def __init__(self, duration: float, granularity: float) -> None:
        if duration <= 0 or granularity <= 0:
            raise ValueError("duration and granularity must be positive")
        self._size = math.ceil(duration / granularity)
        self._granularity = granularity
        # (slot, value) with strictly decreasing values and increasing slots.
        self._entries: deque[tuple[int, int]] = deque()

    def record(self, now: float, value: int) -> None:
        slot = math.floor(now / self._granularity)
        entries = self._entries
        while entries and value >= entries[-1][1]:
            entries.pop()
        while entries and slot - entries[0][0] >= self._size:
            entries.popleft()
        if entries and entries[-1][0] == slot:
            value = max(value, entries.pop()[1])
        entries.append((slot, value))

    def current(self) -> int:
        """The maximum in the window as of the last record (0 before any record)."""
        return self._entries[0][1] if self._entries else 0
