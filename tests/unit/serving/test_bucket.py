from __future__ import annotations

import math

import pytest

from serving.bucket import TimedBuckets, WeightedBuckets, go_pow, round_half_away, smoothing_coefficient

T0 = 1_000_000.0  # an arbitrary whole second on the monotonic scale


def test_values_within_one_second_add_up_in_one_bucket() -> None:
    buckets = TimedBuckets(120)
    buckets.record(T0, 1.0)  # the activator's poke
    buckets.record(T0 + 0.1, 10.0)  # a scrape in the same second
    buckets.record(T0 + 1, 1.0)
    # Average over the two valid buckets: (11 + 1) / 2.
    assert buckets.window_average(T0 + 1.9) == 6.0


def test_a_young_run_of_data_is_averaged_over_its_own_length() -> None:
    buckets = TimedBuckets(5)
    buckets.record(T0, 1)
    assert buckets.window_average(T0) == 1.0  # not 1/5
    for i in range(1, 5):
        buckets.record(T0 + i, i + 1)
    assert buckets.window_average(T0 + 4) == 15 / 5


def test_now_between_buckets_reads_the_last_complete_state() -> None:
    buckets = TimedBuckets(5)
    for i in range(5):
        buckets.record(T0 + i, i + 1)
    assert buckets.window_average(T0 + 3.6) == 3.0


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        pytest.param(2, (15 - 1 - 2) / 3, id="short-hole-drops-expired-buckets"),
        pytest.param(5, 0.0, id="a-whole-window-without-data-is-zero"),
        pytest.param(6, 0.0, id="longer-hole-is-zero"),
    ],
)
def test_buckets_after_the_last_write_leave_the_window(delay: int, expected: float) -> None:
    buckets = TimedBuckets(5)
    for i in range(5):
        buckets.record(T0 + i, i + 1)
    assert buckets.window_average(T0 + 4 + delay) == expected


def test_gaps_inside_the_window_count_as_zero() -> None:
    buckets = TimedBuckets(5)
    for i in range(5):
        buckets.record(T0 + i, i + 1)
    buckets.record(T0 + 6, 91)  # seconds 5 is a gap; 0 and 1 slid out
    assert buckets.window_average(T0 + 6) == (3 + 4 + 5 + 0 + 91) / 5


def test_late_and_too_old_writes() -> None:
    buckets = TimedBuckets(5)
    now = T0 + 100
    buckets.record(now, 1984)
    buckets.record(now - 3, 4)  # late but within the window: extends the run backwards
    assert buckets.window_average(now) == (4 + 1984) / 4
    now += 1
    buckets.record(now, 5)
    buckets.record(now - 3, 10)
    assert buckets.window_average(now) == (4 + 10 + 1984 + 5) / 5
    buckets.record(now - 6, 10)  # older than the window: ignored
    buckets.record(now - 5, 10)  # exactly a window older: ignored too
    assert buckets.window_average(now) == (4 + 10 + 1984 + 5) / 5


def test_a_write_after_exactly_one_window_starts_a_fresh_run() -> None:
    buckets = TimedBuckets(5)
    buckets.record(T0, 100)
    buckets.record(T0 + 5, 10)
    assert buckets.window_average(T0 + 5) == 10.0


def test_is_empty_until_data_and_again_a_window_later() -> None:
    buckets = TimedBuckets(6)
    assert buckets.is_empty(T0)
    buckets.record(T0, 0.0)  # a recorded zero is data
    assert not buckets.is_empty(T0 + 6)
    assert buckets.is_empty(T0 + 7)


def test_averages_are_rounded_to_six_digits_like_knative() -> None:
    buckets = TimedBuckets(3)
    for i, value in enumerate((1.0, 1.0, 0.0)):
        buckets.record(T0 + i, value)
    assert buckets.window_average(T0 + 2) == 0.666667


def test_resize_keeps_the_newest_buckets() -> None:
    buckets = TimedBuckets(10)
    for i in range(10):
        buckets.record(T0 + i, float(i))
    buckets.resize(4, T0 + 9)
    assert buckets.buckets == 4
    assert buckets.window_average(T0 + 9) == (6 + 7 + 8 + 9) / 4


@pytest.mark.parametrize(
    ("buckets", "alpha"),
    [
        pytest.param(100, 0.2, id="long-window-floored-at-0.2"),
        pytest.param(60, 0.2, id="default-window"),
        pytest.param(40, 0.20567, id="forty"),
        pytest.param(6, 0.78456, id="panic-window"),
    ],
)
def test_smoothing_coefficient(buckets: int, alpha: float) -> None:
    assert smoothing_coefficient(buckets) == pytest.approx(alpha, abs=1e-5)


def test_weighted_average_weighs_the_newest_bucket_most() -> None:
    buckets = WeightedBuckets(5)
    m = buckets.alpha
    buckets.record(T0, 2)
    assert buckets.window_average(T0) == 2 * m
    # One second later with no write: the only bucket has aged by one step.
    assert buckets.window_average(T0 + 1) == 2 * m * (1 - m)
    for i in range(5):
        buckets.record(T0 + 2 + i, i + 2)
    expected = sum((6 - k) * m * (1 - m) ** k for k in range(5))
    assert buckets.window_average(T0 + 6) == pytest.approx(expected, rel=1e-15)
    assert buckets.window_average(T0 + 16) == 0.0


def test_weighted_differs_from_linear_by_order() -> None:
    rising, falling = WeightedBuckets(4), WeightedBuckets(4)
    for i, (up, down) in enumerate(zip((5, 5, 10, 10), (10, 10, 5, 5), strict=True)):
        rising.record(T0 + i, up)
        falling.record(T0 + i, down)
    assert rising.window_average(T0 + 3) > falling.window_average(T0 + 3)


@pytest.mark.parametrize(
    ("value", "rounded"),
    [
        pytest.param(0.5, 1.0, id="half-up"),
        pytest.param(-0.5, -1.0, id="half-away-negative"),
        pytest.param(2.5, 3.0, id="not-bankers"),
        pytest.param(0.49999999999999994, 0.0, id="just-below-half"),
        pytest.param(-2.4, -2.0, id="negative-down"),
    ],
)
def test_round_half_away(value: float, rounded: float) -> None:
    assert round_half_away(value) == rounded


@pytest.mark.parametrize(
    ("base", "exponent"),
    [
        pytest.param(0.0001, 1 / 6, id="fractional"),
        pytest.param(0.8, 7.0, id="integer"),
        pytest.param(0.8, 7.75, id="mixed"),
        pytest.param(3.0, -2.0, id="negative"),
    ],
)
def test_go_pow_agrees_with_pow(base: float, exponent: float) -> None:
    assert go_pow(base, exponent) == pytest.approx(math.pow(base, exponent), rel=1e-14)
