"""Time-window buckets: the autoscaler's stable and panic windows over 1 s buckets of recorded load.

Values recorded within one granularity (1 s, Knative's bucket size) add up in one bucket, and a window average
divides by the buckets that hold valid data, exactly as Knative's aggregation does (including its rounding to
six digits), so replaying a trace gives Knative's numbers. Times are seconds on any monotonic scale.
"""

from __future__ import annotations

import math
from typing import Final

# Knative's weighted average: the weights of the buckets in a window must add up to at least 0.9999; this is
# the 1 - 0.9999 left over, written exactly (Go folds the constant expression without rounding error)...
_WEIGHT_REMAINDER: Final = 0.0001
# ...but the newest bucket's weight is never below this, so very long windows still react to fresh data.
_MIN_SMOOTHING: Final = 0.2
# Linear window averages are rounded to this many decimal digits (Knative does, to hide float noise).
_PRECISION_DIGITS: Final = 6
_PRECISION_SCALE: Final = 10.0**_PRECISION_DIGITS

# Bucket index meaning "no write yet"; far enough in the past that every gap check treats it as empty.
_NEVER: Final = -(1 << 62)


def round_half_away(value: float) -> float:
    """Round to the nearest integer, halves away from zero (Go's `math.Round`, unlike Python's `round`)."""
    whole = math.trunc(value)
    if abs(value - whole) >= 0.5:
        whole += 1 if value > 0 else -1
    return float(whole)


def _round6(value: float) -> float:
    return round_half_away(value * _PRECISION_SCALE) / _PRECISION_SCALE


def go_pow(base: float, exponent: float) -> float:
    """`base ** exponent` evaluated the way Go's `math.Pow` does for finite positive bases.

    Go splits the exponent into integer and fractional parts and multiplies by repeated squaring; matching
    that keeps weighted averages equal to Knative's to the last bit in practice.
    """
    if exponent == 0 or base == 1:
        return 1.0
    if exponent == 1:
        return base
    if base <= 0 or not math.isfinite(base) or not math.isfinite(exponent):
        return math.pow(base, exponent)
    if exponent == 0.5:
        return math.sqrt(base)
    if exponent == -0.5:
        return 1 / math.sqrt(base)
    negative = exponent < 0
    exponent = abs(exponent)
    fraction, whole = math.modf(exponent)
    if fraction != 0 and fraction > 0.5:
        fraction -= 1
        whole += 1
    result = 1.0
    result_exp = 0
    if fraction != 0:
        result = math.exp(fraction * math.log(base))
    mantissa, mexp = math.frexp(base)
    count = int(whole)
    while count:
        if count & 1:
            result *= mantissa
            result_exp += mexp
        mantissa *= mantissa
        mexp <<= 1
        if mantissa < 0.5:
            mantissa += mantissa
            mexp -= 1
        count >>= 1
    if negative:
        result = 1 / result
        result_exp = -result_exp
    return math.ldexp(result, result_exp)


# max(1 - 0.0001^(1/n), 0.2) for n = 1..41 buckets, as Go's math.Pow evaluates it (its Exp and Log can differ
# from the C library's in the last bit); from 42 buckets on the floor of 0.2 applies.
_SMOOTHING_TABLE: Final = (
    0.9999, 0.99, 0.9535841116638721, 0.9, 0.8415106807538886, 0.7845565309968116, 0.7317304204720274,
    0.683772233983162, 0.6406186336195372, 0.6018928294465027, 0.5671238718916941, 0.535841116638722,
    0.507611736829326, 0.4820525320768788, 0.45883047345353634, 0.4376586748096509, 0.41829086706256413,
    0.40051574968105896, 0.3841517889339736, 0.36904265551980675, 0.3550533228962376, 0.342066775342432,
    0.3299812496490411, 0.31870793094203875, 0.3081690290810636, 0.29829617132961717, 0.28902905676875645,
    0.28031432699884795, 0.27210461560168486, 0.2643577455403586, 0.25703604924050527, 0.2501057906675441,
    0.24353667244537114, 0.23730141409765548, 0.231375389960226, 0.2257363173188729, 0.22036398695947668,
    0.21524002964853872, 0.21034771315002732, 0.2056717652757185, 0.20119821919842973,
)  # fmt: skip


def smoothing_coefficient(buckets: int) -> float:
    """Weight of the newest bucket in a weighted-exponential window of `buckets` buckets (Knative's rule:
    max(1 - 0.0001^(1/n), 0.2), so that the weights of the window add up to at least 0.9999)."""
    if 1 <= buckets <= len(_SMOOTHING_TABLE):
        return _SMOOTHING_TABLE[buckets - 1]
    return max(1 - go_pow(_WEIGHT_REMAINDER, 1 / buckets), _MIN_SMOOTHING)


class TimedBuckets:
    """A ring of `ceil(window / granularity)` buckets with Knative's linear window average.

    Invariants: `_total` is the running sum of every bucket (the ring may still hold values older than the
    window until they are overwritten or excluded by `window_average`); `_first` is the oldest bucket of the
    current run of data, reset when a whole window passes without a write. Not thread-safe: one event loop.
    """

    __slots__ = ("_buckets", "_first", "_granularity", "_last", "_size", "_total", "_window")

    def __init__(self, window: float, granularity: float = 1.0) -> None:
        if window <= 0 or granularity <= 0:
            raise ValueError("window and granularity must be positive")
        self._granularity = granularity
        self._window = window
        self._size = math.ceil(window / granularity)
        self._buckets = [0.0] * self._size
        self._first = _NEVER
        self._last = _NEVER
        self._total = 0.0

    @property
    def window(self) -> float:
        return self._window

    @property
    def buckets(self) -> int:
        return self._size

    def _index(self, now: float) -> int:
        return math.floor(now / self._granularity)

    def is_empty(self, now: float) -> bool:
        """No data was recorded within the window ending at `now`."""
        return (self._index(now) - self._last) * self._granularity > self._window

    def record(self, now: float, value: float) -> None:
        """Add `value` to the bucket of `now`; values a window older than the newest write are dropped."""
        index = self._index(now)
        buckets = self._buckets
        size = self._size
        if index != self._last:
            if (index - self._last) * self._granularity <= -self._window:
                return  # a full window older than the newest data: Knative ignores it
            if self._first == _NEVER or self._first > index:
                self._first = index
            if index > self._last:
                if (index - self._last) * self._granularity >= self._window:
                    # Nothing for a whole window: start a fresh run of data.
                    self._first = index
                    for i in range(size):
                        buckets[i] = 0.0
                    self._total = 0.0
                else:
                    # Clear the buckets skipped since the last write (they held data a lap ago).
                    total = self._total
                    for i in range(self._last + 1, index + 1):
                        slot = i % size
                        total -= buckets[slot]
                        buckets[slot] = 0.0
                    self._total = total
                self._last = index
        buckets[index % size] += value
        self._total += value

    def window_average(self, now: float) -> float:
        """Average over the valid buckets of the window ending at `now` (0 when the window holds no data).

        A run of data younger than the window is averaged over its own length; buckets after the last write
        are excluded, and gaps between writes count as zeros.
        """
        index = self._index(now)
        last = self._last
        gap = index - last
        if gap <= 0:
            valid = min(last - self._first + 1, self._size)
            return _round6(self._total / valid)
        if gap * self._granularity < self._window:
            buckets = self._buckets
            size = self._size
            remaining = self._total
            for i in range(last + 1, index + 1):
                remaining -= buckets[i % size]
            valid = min(last - self._first + 1, size - gap)
            return _round6(remaining / valid)
        return 0.0

    def resize(self, window: float, now: float) -> None:
        """Change the window length, keeping the newest data if any was written within the old window before
        `now` (Knative resizes when a revision's window annotation changes)."""
        if window == self._window:
            return
        size = math.ceil(window / self._granularity)
        fresh = [0.0] * size
        total = 0.0
        if (self._index(now) - self._last) * self._granularity <= self._window:
            old_size = self._size
            slot = self._last
            for _ in range(min(size, old_size)):
                value = self._buckets[slot % old_size]
                fresh[slot % size] = value
                total += value
                slot -= 1
            self._first = self._last - (old_size - 1)
        else:
            self._first = _NEVER
        self._window = window
        self._size = size
        self._buckets = fresh
        self._total = total


class WeightedBuckets(TimedBuckets):
    """Buckets averaged with exponentially decaying weights: the newest bucket weighs alpha, the one before
    alpha*(1-alpha), and so on, with alpha = max(1 - 0.0001^(1/n), 0.2) for n buckets (Knative's
    weighted-exponential aggregation)."""

    __slots__ = ("_alpha",)

    def __init__(self, window: float, granularity: float = 1.0) -> None:
        super().__init__(window, granularity)
        self._alpha = smoothing_coefficient(self._size)

    @property
    def alpha(self) -> float:
        return self._alpha

    def window_average(self, now: float) -> float:
        if self.is_empty(now):
            return 0.0
        index = self._index(now)
        last = self._last
        size = self._size
        alpha = self._alpha
        multiplier = alpha
        count = size
        if index > last:
            skipped = index - last
            multiplier *= go_pow(1 - alpha, skipped)
            count -= skipped
        buckets = self._buckets
        start = last + size
        result = 0.0
        for i in range(count):
            result += buckets[(start - i) % size] * multiplier
            multiplier *= 1 - alpha
        return result

    def resize(self, window: float, now: float) -> None:
        super().resize(window, now)
        self._alpha = smoothing_coefficient(self._size)
