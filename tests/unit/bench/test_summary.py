from __future__ import annotations

import pytest

from bench.load.sample import Sample
from bench.results.summary import Check, Distribution, percentile, summarize, timeline


def _sample(
    latency_ms: float,
    *,
    t: float = 0.0,
    status: int = 200,
    error: str | None = None,
    target: str = "t",
    activator_ms: float | None = None,
) -> Sample:
    return Sample(
        target=target,
        scheduled=t,
        send_lag=0.0,
        latency=latency_ms / 1000,
        status=status,
        error=error,
        activator_ms=activator_ms,
    )


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        pytest.param([5.0], 50, 5.0, id="single"),
        pytest.param([1.0, 2.0, 3.0, 4.0], 50, 2.0, id="median-even-takes-lower-rank"),
        pytest.param([1.0, 2.0, 3.0, 4.0, 5.0], 50, 3.0, id="median-odd"),
        pytest.param([float(i) for i in range(1, 101)], 95, 95.0, id="p95-of-100"),
        pytest.param([float(i) for i in range(1, 101)], 99, 99.0, id="p99-of-100"),
        pytest.param([float(i) for i in range(1, 21)], 95, 19.0, id="p95-of-20"),
        pytest.param([float(i) for i in range(1, 11)], 99, 10.0, id="p99-of-10-is-max"),
        pytest.param([1.0, 2.0, 3.0], 100, 3.0, id="p100-is-max"),
    ],
)
def test_nearest_rank_percentile(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == expected


@pytest.mark.parametrize("p", [0, -1, 101])
def test_percentile_outside_range_is_refused(p: float) -> None:
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], p)


def test_percentile_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_distribution_of_values() -> None:
    dist = Distribution.of([float(v) for v in range(100, 0, -1)])
    assert dist is not None
    assert (dist.count, dist.p50, dist.p90, dist.p95, dist.p99, dist.max) == (
        100,
        50.0,
        90.0,
        95.0,
        99.0,
        100.0,
    )
    assert dist.mean == pytest.approx(50.5)
    assert Distribution.of([]) is None


def test_group_summary_counts_errors_by_kind_and_keeps_latency_of_answers_only() -> None:
    samples = [
        _sample(100, t=0.0),
        _sample(110, t=0.5, activator_ms=4.0),
        _sample(30_000, t=1.0, status=0, error="timeout"),
        _sample(5, t=1.5, status=503),
        _sample(120, t=2.0, target="other"),
    ]
    groups = summarize(samples)
    assert list(groups) == ["t", "other"]
    g = groups["t"]
    assert (g.requests, g.ok, g.errors) == (4, 2, 2)
    assert g.error_kinds == {"HTTP 503": 1, "timeout": 1}
    assert g.latency_ms is not None
    assert g.latency_ms.count == 3  # the timeout got no response: it is an error, not a latency
    assert g.latency_ms.max == pytest.approx(110)
    assert g.achieved_rate == pytest.approx(3 / 1.5)
    assert (g.activator_waits, g.activator_ms.p50 if g.activator_ms else None) == (1, 4.0)


def test_timeline_buckets_by_scheduled_second() -> None:
    samples = [_sample(10, t=0.1), _sample(30, t=0.9), _sample(20, t=0.5), _sample(50, t=2.2, status=500)]
    buckets = timeline(samples)
    assert [(b.t, b.requests, b.errors) for b in buckets] == [(0.0, 3, 0), (2.0, 1, 1)]
    assert buckets[0].p50_ms == pytest.approx(20)
    assert buckets[0].max_ms == pytest.approx(30)


@pytest.mark.parametrize(
    ("value", "limit", "passed"),
    [
        pytest.param(104.9, 105.0, True, id="under"),
        pytest.param(105.0, 105.0, True, id="equal"),
        pytest.param(105.1, 105.0, False, id="over"),
        pytest.param(None, 105.0, False, id="not-measured"),
    ],
)
def test_check_passes_at_or_under_its_limit(value: float | None, limit: float, passed: bool) -> None:
    check = Check(name="p95", value=value, limit=limit, unit="ms", knative="110 ms")
    assert check.passed is passed
    assert check.to_json()["passed"] is passed
