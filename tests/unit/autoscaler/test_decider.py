from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from autoscaler.decider import Decider, DeciderSpec, activator_count, excess_burst_capacity
from autoscaler.maxwindow import MaxWindow
from autoscaler.revision import RevisionAutoscaler
from serving.autoscaling import PREFIX, revision_scaling
from serving.clock import FakeClock
from serving.stat import Stat

SPEC = DeciderSpec(
    metric="concurrency",
    target_value=10.0,
    total_value=10 / 0.75,
    target_burst_capacity=100.0,
    activator_capacity=150.0,
    panic_threshold=2.0,
    stable_window=60.0,
    scale_down_delay=0.0,
    initial_scale=1,
    activation_scale=0,
    max_scale_up_rate=10.0,
    max_scale_down_rate=10.0,
)


def spec(**changes: Any) -> DeciderSpec:
    return dataclasses.replace(SPEC, **changes)


@pytest.mark.parametrize(
    ("changes", "ready", "stable", "panic", "desired"),
    [
        pytest.param({}, 1, 50.0, 50.0, 5, id="stable-over-target"),
        pytest.param({}, 1, 51.0, 10.0, 6, id="rounds-up"),
        pytest.param({}, 8, 50.0, 50.0, 5, id="scale-down"),
        pytest.param({}, 5, 50.0, 50.0, 5, id="no-change"),
        pytest.param({}, 1, 0.0, 0.0, 0, id="zero-load-zero-pods"),
        pytest.param({}, 1, 1000.0, 1000.0, 10, id="scale-up-rate-limits-to-10x"),
        pytest.param({}, 10, 1000.0, 1000.0, 100, id="next-step-10x-again"),
        pytest.param(
            {"max_scale_up_rate": 1.1, "target_value": 1.0}, 2, 3.0, 3.1, 3, id="small-up-rate-plus-one"
        ),
        pytest.param(
            {"max_scale_up_rate": 1.1, "target_value": 1.0}, 2, 30.0, 2.0, 3, id="up-rate-ceil-2x1.1"
        ),
        pytest.param({}, 100, 1.0, 1.0, 10, id="scale-down-rate-limits"),
        pytest.param({"max_scale_down_rate": 1.1}, 100, 1.0, 1.0, 90, id="small-down-rate"),
        pytest.param(
            {"max_scale_down_rate": 1.1, "reachable": False}, 100, 1.0, 1.0, 1, id="unreachable-drops"
        ),
        pytest.param({"activation_scale": 2}, 1, 1.0, 1.0, 2, id="activation-scale-raises"),
        pytest.param({"activation_scale": 2}, 1, 0.0, 0.0, 0, id="activation-scale-keeps-zero"),
        pytest.param({"activation_scale": 3}, 1, 25.0, 25.0, 3, id="activation-over-need"),
        pytest.param({"metric": "rps"}, 1, 100.0, 99.0, 10, id="rps-same-math"),
    ],
)
def test_desired_pods(changes: dict[str, Any], ready: int, stable: float, panic: float, desired: int) -> None:
    decider = Decider(spec(**changes), ready_pods=0, now=0.0)
    assert decider.decide(2.0, ready, stable, panic).desired_pods == desired


@pytest.mark.parametrize(
    ("tbc", "ready", "panic", "ebc"),
    [
        pytest.param(0.0, 3, 10.0, 0, id="tbc0-always-0"),
        pytest.param(-1.0, 3, 10.0, -1, id="tbc-unlimited-always-minus-1"),
        pytest.param(211.0, 1, 0.0, -111, id="tbc211-one-pod-cc0"),
        pytest.param(211.0, 3, 50.0, 39, id="tbc211-three-pods"),
        pytest.param(211.0, 0, 0.0, -211, id="no-pods"),
        pytest.param(100.0, 1, 30.5, -31, id="floors-negative"),
    ],
)
def test_excess_burst_capacity(tbc: float, ready: int, panic: float, ebc: int) -> None:
    s = spec(target_burst_capacity=tbc, total_value=100.0, target_value=70.0)
    assert excess_burst_capacity(s, ready, panic) == ebc
    assert Decider(s, ready_pods=0, now=0).decide(2.0, ready, panic, panic).excess_burst_capacity == ebc


@pytest.mark.parametrize(
    ("tbc", "ready", "activators"),
    [
        pytest.param(0.0, 50, 2, id="tbc0-minimum"),
        pytest.param(-1.0, 3, 3, id="unlimited-covers-capacity"),
        pytest.param(-1.0, 0, 2, id="unlimited-at-zero"),
        pytest.param(211.0, 1, 4, id="tbc211-one-pod"),
        pytest.param(211.0, 10, 13, id="tbc211-ten-pods"),
    ],
)
def test_activator_count(tbc: float, ready: int, activators: int) -> None:
    s = spec(target_burst_capacity=tbc, total_value=100.0, activator_capacity=100.0)
    assert activator_count(s, ready) == activators


def test_initial_excess_burst_capacity_from_initial_scale() -> None:
    assert spec(total_value=100.0, target_burst_capacity=211.0).initial_excess_burst_capacity() == -111
    assert spec(total_value=100.0, initial_scale=3).initial_excess_burst_capacity() == 200
    assert spec(target_burst_capacity=0.0).initial_excess_burst_capacity() == 0
    assert spec(target_burst_capacity=-1.0).initial_excess_burst_capacity() == -1


def test_panic_starts_at_the_threshold_and_takes_the_larger_desire() -> None:
    decider = Decider(spec(target_value=10.0), ready_pods=0, now=0)
    below = decider.decide(2.0, 10, 100.0, 199.0)  # 20 pods for 10 ready: 2.0 is the threshold
    assert below.panic
    assert below.desired_pods == 20
    calm = Decider(spec(target_value=10.0), ready_pods=0, now=0).decide(2.0, 10, 100.0, 189.0)
    assert not calm.panic
    assert calm.desired_pods == 10


def test_panic_ends_a_stable_window_after_the_last_overload_and_never_scales_down_meanwhile() -> None:
    clock = FakeClock(1000.0)
    decider = Decider(spec(target_value=10.0, max_scale_down_rate=100.0), ready_pods=0, now=clock.now())
    overloaded = decider.decide(clock.now(), 10, 100.0, 1000.0)
    assert overloaded.panic
    assert overloaded.desired_pods == 100
    last_overload = clock.now()
    while clock.now() < last_overload + 60:
        clock.advance(2)
        held = decider.decide(clock.now(), 100, 10.0, 10.0)
        assert held.panic, clock.now() - last_overload
        assert held.desired_pods == 100  # never down while panicking
    assert clock.now() == last_overload + 60  # exactly a stable window: still panicking
    clock.advance(2)
    released = decider.decide(clock.now(), 100, 10.0, 10.0)
    assert not released.panic
    assert released.desired_pods == 1


def test_panic_is_extended_by_each_overload() -> None:
    decider = Decider(spec(target_value=1.0), ready_pods=0, now=0)
    assert decider.decide(0.0, 10, 11.0, 25.0).desired_pods == 25
    assert decider.decide(30.0, 40, 30.0, 80.0).desired_pods == 80  # still over: panic restarts at 30 s
    assert decider.decide(62.0, 55, 50.0, 56.0).panic  # 32 s after the last overload
    not_panicking = decider.decide(92.0, 55, 50.0, 56.0)
    assert not not_panicking.panic
    assert not_panicking.desired_pods == 50


def test_in_panic_the_stable_desire_wins_when_larger() -> None:
    decider = Decider(spec(target_value=1.0, max_scale_up_rate=1000.0), ready_pods=5, now=0)
    decision = decider.decide(5.0, 5, 50.0, 30.0)
    assert decision.panic
    assert decision.desired_pods == 50


def test_fresh_autoscaler_with_pods_starts_in_panic_and_holds_them() -> None:
    decider = Decider(spec(), ready_pods=7, now=100.0)
    assert decider.panicking
    first = decider.decide(102.0, 7, 0.0, 0.0)
    assert first.panic
    assert first.desired_pods == 7
    later = decider.decide(164.0, 7, 0.0, 0.0)  # a stable window later: free to scale down
    assert not later.panic
    assert later.desired_pods == 0


@pytest.mark.parametrize("ready", [0, 1], ids=["no-pods", "one-pod"])
def test_fresh_autoscaler_with_at_most_one_pod_does_not_panic(ready: int) -> None:
    decider = Decider(spec(), ready_pods=ready, now=0)
    assert not decider.panicking
    assert decider.decide(2.0, ready, 0.0, 0.0).desired_pods == 0


def test_scale_down_delay_keeps_the_maximum_of_the_delay() -> None:
    decider = Decider(spec(target_value=10.0, scale_down_delay=300.0), ready_pods=0, now=0)
    assert decider.decide(2.0, 0, 40.0, 40.0).desired_pods == 4
    assert decider.decide(300.0, 4, 0.0, 0.0).desired_pods == 4  # less than 5 min at lower load
    assert decider.decide(302.0, 4, 0.0, 0.0).desired_pods == 0


def test_scale_down_delay_steps_down_as_maxima_slide_out() -> None:
    decider = Decider(
        spec(target_value=10.0, scale_down_delay=300.0, max_scale_down_rate=100.0), ready_pods=0, now=0
    )
    assert decider.decide(540.0, 4, 40.0, 40.0).desired_pods == 4
    assert decider.decide(600.0, 4, 30.0, 30.0).desired_pods == 4
    assert decider.decide(660.0, 4, 0.0, 0.0).desired_pods == 4
    assert decider.decide(840.0, 4, 0.0, 0.0).desired_pods == 3  # the 4 slid out
    assert decider.decide(900.0, 4, 0.0, 0.0).desired_pods == 0


def test_scale_down_delay_is_ignored_when_unreachable() -> None:
    decider = Decider(spec(target_value=10.0, scale_down_delay=300.0), ready_pods=0, now=0)
    assert decider.decide(2.0, 4, 40.0, 40.0).desired_pods == 4
    decider.update(spec(target_value=10.0, scale_down_delay=300.0, reachable=False))
    assert decider.decide(4.0, 4, 0.0, 0.0).desired_pods == 0


def test_max_window() -> None:
    window = MaxWindow(6.0, 2.0)  # three 2 s slots
    for now, value, current in [
        (0, 5, 5),
        (2, 3, 5),
        (4, 1, 5),
        (6, 2, 3),
        (7, 4, 4),
        (8, 0, 4),
        (10, 0, 4),
        (12, 0, 0),
    ]:
        window.record(now, value)
        assert window.current() == current, now


def ann(**pairs: str) -> dict[str, str]:
    return {PREFIX + k.replace("_", "-"): v for k, v in pairs.items()}


def test_rps_metric_scales_on_request_counts() -> None:
    scaling = revision_scaling(ann(metric="rps", target="10", target_utilization_percentage="100"), 0)
    revision = RevisionAutoscaler(scaling, now=0, ready_pods=0)
    for t in range(10):
        revision.record(float(t), Stat(average_concurrent_requests=1.0, request_count=35.0))
    decision = revision.decide(9.5, 1)
    assert decision is not None
    assert decision.stable == 35.0
    assert decision.desired_pods == 4


def test_proxied_load_is_not_counted_twice() -> None:
    scaling = revision_scaling(ann(target="10", target_utilization_percentage="100"), 0)
    revision = RevisionAutoscaler(scaling, now=0, ready_pods=0)
    revision.record(0.0, Stat(average_concurrent_requests=30.0, average_proxied_concurrent_requests=20.0))
    revision.record(0.5, Stat(average_concurrent_requests=20.0))  # the activator's report for the same load
    decision = revision.decide(0.9, 1)
    assert decision is not None
    assert decision.stable == 30.0


def test_weighted_exponential_reacts_faster_than_linear() -> None:
    linear = RevisionAutoscaler(revision_scaling(ann(window="6s"), 0), now=0, ready_pods=0)
    weighted = RevisionAutoscaler(
        revision_scaling(ann(window="6s", metric_aggregation_algorithm="weighted-exponential"), 0),
        now=0,
        ready_pods=0,
    )
    for t, value in enumerate([0.0, 0.0, 0.0, 0.0, 0.0, 700.0]):
        for revision in (linear, weighted):
            revision.collection.record_values(float(t), value, 0.0)
    slow, fast = linear.decide(5.0, 10), weighted.decide(5.0, 10)
    assert slow is not None
    assert fast is not None
    assert slow.stable == pytest.approx(700 / 6)
    assert fast.stable == pytest.approx(700 * 0.7845565309968116)  # the newest bucket weighs alpha(6)
    assert fast.desired_pods > slow.desired_pods


def test_no_data_no_decision_then_decisions_resume() -> None:
    revision = RevisionAutoscaler(revision_scaling({}, 0), now=0, ready_pods=0)
    assert revision.decide(10.0, 0) is None
    assert revision.desired == -1
    revision.collection.record_values(11.0, 140.0, 0.0)
    decision = revision.decide(12.0, 1)
    assert decision is not None
    assert decision.desired_pods == 2
    assert revision.decide(72.0, 2) is None  # a stable window with no data: no decision, desire kept
    assert revision.desired == 2


def test_unlimited_burst_capacity_decides_on_an_empty_window() -> None:
    revision = RevisionAutoscaler(revision_scaling(ann(target_burst_capacity="-1"), 0), now=0, ready_pods=0)
    assert not revision.collection.scraped
    decision = revision.decide(10.0, 1)
    assert decision is not None
    assert decision.desired_pods == 0
    assert decision.excess_burst_capacity == -1
