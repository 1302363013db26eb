from __future__ import annotations

import pytest

from serving.tally import RequestTally


def test_buckets_include_their_upper_bound_and_overflow_goes_to_inf() -> None:
    tally = RequestTally([0.1, 1.0])
    for seconds in (0.05, 0.1, 0.5, 1.0, 7.0):
        tally.observe(200, seconds)
    tally.observe(503, 0.0)
    tally.observe(999, 0.0)  # outside HTTP's codes: still counted
    assert tally.buckets == [4, 2, 1]
    assert tally.cumulative() == [(0.1, 4), (1.0, 6), (float("inf"), 7)]
    assert tally.by_status == {200: 5, 503: 1, 999: 1}
    assert tally.sum == pytest.approx(8.65)


@pytest.mark.parametrize("bounds", [[1.0, 0.5], [0.5, 0.5]])
def test_bounds_must_increase(bounds: list[float]) -> None:
    with pytest.raises(ValueError, match="increasing"):
        RequestTally(bounds)
