from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from autoscaler.decider import DeciderSpec
from autoscaler.scaler import UNKNOWN, Outcome, PodAutoscaler, apply_bounds
from serving.autoscaling import PREFIX, RevisionScaling, parse_config, revision_scaling


def scaling(config: Mapping[str, str] | None = None, /, **annotations: str) -> RevisionScaling:
    return revision_scaling(
        {PREFIX + k.replace("_", "-"): v for k, v in annotations.items()}, 0, parse_config(config or {})
    )


@dataclass
class Driver:
    """Feeds a PodAutoscaler the decider's desire at explicit times, as the autoscaler's ticks do."""

    scaling: RevisionScaling
    now: float = 0.0
    ready: int = 1
    pa: PodAutoscaler = field(init=False)

    def __post_init__(self) -> None:
        self.pa = PodAutoscaler(self.now)

    def at(
        self, now: float, desired: int, *, ebc: int = -111, in_path: bool = True, ready: int | None = None
    ) -> Outcome:
        self.now = now
        if ready is not None:
            self.ready = ready
        return self.pa.reconcile(
            now=now,
            scaling=self.scaling,
            spec=DeciderSpec.of(self.scaling),
            desired=desired,
            excess_burst_capacity=ebc,
            ready_pods=self.ready,
            activator_in_path=in_path,
        )


@pytest.mark.parametrize(
    ("low", "high", "value", "bounded"),
    [
        pytest.param(0, 0, 5, 5, id="unbounded"),
        pytest.param(2, 0, 0, 2, id="min"),
        pytest.param(0, 3, 10, 3, id="max"),
        pytest.param(0, 0, -1, 0, id="unknown-to-min"),
        pytest.param(5, 3, 4, 5, id="crossed-bounds-min-wins"),
    ],
)
def test_apply_bounds(low: int, high: int, value: int, bounded: int) -> None:
    assert apply_bounds(low, high, value) == bounded


def test_new_revision_waits_for_metrics_and_becomes_active_with_its_pods() -> None:
    d = Driver(scaling(), ready=0)
    first = d.at(0.0, UNKNOWN)
    assert (first.want, first.replicas, first.mode, first.active) == (UNKNOWN, None, "Proxy", "activating")
    up = d.at(2.0, UNKNOWN, ready=1)
    assert (up.want, up.replicas, up.active) == (UNKNOWN, None, "active")
    decided = d.at(4.0, 3, ebc=50)
    assert (decided.want, decided.replicas, decided.mode) == (3, 3, "Serve")


@pytest.mark.parametrize(
    ("ebc", "want", "mode"),
    [
        pytest.param(0, 2, "Serve", id="enough-burst-capacity"),
        pytest.param(-1, 2, "Proxy", id="not-enough"),
        pytest.param(5, 0, "Proxy", id="going-to-zero"),
    ],
)
def test_mode(ebc: int, want: int, mode: str) -> None:
    d = Driver(scaling(min_scale="0"))
    d.at(0.0, UNKNOWN)
    d.pa._active_since = -1000.0  # active long enough for zero to be wanted at once
    assert d.at(2.0, want, ebc=ebc).mode == mode


def test_scale_to_zero_waits_a_stable_window_of_activity_then_goes_when_the_activator_was_in_path() -> None:
    d = Driver(scaling())  # TBC 211: with one pod the activator has been in the path all along
    d.at(0.0, UNKNOWN)
    assert d.pa.active == "active"
    held = d.at(10.0, 0)
    assert (held.want, held.replicas) == (1, 1)  # active for less than a stable window: keep one pod
    assert d.at(58.0, 0).replicas == 1
    decided = d.at(60.0, 0)
    assert (decided.want, decided.replicas, decided.active) == (0, None, "inactive")
    gone = d.at(62.0, 0)
    assert (gone.want, gone.replicas) == (0, 0)  # activator in the path for > grace: zero at once


def test_scale_to_zero_waits_the_grace_period_when_the_activator_just_entered_the_path() -> None:
    d = Driver(scaling(target_burst_capacity="0"))  # Serve while pods are wanted
    d.at(0.0, UNKNOWN)
    assert d.at(30.0, 2, ebc=0).mode == "Serve"
    inactive = d.at(60.0, 0, ebc=0)
    assert (inactive.want, inactive.mode) == (0, "Proxy")
    for t in (62.0, 80.0, 88.0):
        assert d.at(t, 0, ebc=0).replicas is None, t
    assert d.at(90.0, 0, ebc=0).replicas == 0  # inactive for the 30 s grace period


def test_pod_retention_keeps_the_last_pod_longer() -> None:
    d = Driver(scaling(scale_to_zero_pod_retention_period="100s"))
    d.at(0.0, UNKNOWN)
    d.at(60.0, 0)
    assert d.pa.active == "inactive"
    assert d.at(62.0, 0).replicas is None  # activator long in path, but retention not over
    assert d.at(158.0, 0).replicas is None
    assert d.at(160.0, 0).replicas == 0


def test_grace_period_from_config() -> None:
    d = Driver(scaling({"scale-to-zero-grace-period": "10s"}, target_burst_capacity="0"))
    d.at(0.0, UNKNOWN)
    assert d.at(30.0, 2, ebc=0).mode == "Serve"
    d.at(60.0, 0, ebc=0)
    assert d.at(68.0, 0, ebc=0).replicas is None
    assert d.at(70.0, 0, ebc=0).replicas == 0


def test_no_zero_until_the_activator_is_verified_in_the_path() -> None:
    d = Driver(scaling())
    d.at(0.0, UNKNOWN)
    d.at(60.0, 0)
    assert d.pa.needs_activator_probe(d.scaling, 0)
    assert d.at(120.0, 0, in_path=False).replicas is None
    assert d.at(122.0, 0, in_path=True).replicas == 0


def test_unlimited_burst_capacity_needs_no_activator_probe() -> None:
    d = Driver(scaling(target_burst_capacity="-1"))
    d.at(0.0, UNKNOWN)
    d.at(60.0, 0, ebc=-1)
    assert not d.pa.needs_activator_probe(d.scaling, 0)
    assert d.at(62.0, 0, ebc=-1, in_path=False).replicas == 0


def test_scale_to_zero_disabled_keeps_one_pod() -> None:
    d = Driver(scaling({"enable-scale-to-zero": "false"}))
    d.at(0.0, UNKNOWN)
    for t in (60.0, 200.0, 1000.0):
        outcome = d.at(t, 0)
        assert (outcome.want, outcome.replicas) == (1, 1)


@pytest.mark.parametrize(
    ("annotations", "desired", "want"),
    [
        pytest.param({"min_scale": "2"}, 0, 2, id="min-floors-zero"),
        pytest.param({"min_scale": "2"}, 5, 5, id="min-below-desire"),
        pytest.param({"max_scale": "3"}, 10, 3, id="max-caps"),
        pytest.param({"min_scale": "1", "max_scale": "1"}, 7, 1, id="pinned"),
    ],
)
def test_min_and_max_scale(annotations: dict[str, str], desired: int, want: int) -> None:
    d = Driver(scaling(**annotations), ready=2)
    d.at(0.0, UNKNOWN)
    outcome = d.at(100.0, desired)
    assert (outcome.want, outcome.replicas) == (want, want)


def test_min_scale_from_config_never_goes_to_zero() -> None:
    d = Driver(scaling({"min-scale": "1"}))
    d.at(0.0, UNKNOWN)
    for t in (60.0, 62.0, 500.0):
        assert d.at(t, 0).replicas == 1
    assert d.pa.active == "active"


def test_initial_scale_holds_until_reached_once() -> None:
    d = Driver(scaling(initial_scale="3"), ready=1)
    d.at(0.0, UNKNOWN)
    assert d.pa.active == "activating"  # one ready pod of three
    assert d.at(2.0, 1).want == 3
    d.at(4.0, 1, ready=3)
    assert d.pa.initialized
    assert d.at(6.0, 1).want == 1


def test_activation_times_out_to_zero() -> None:
    d = Driver(scaling(), ready=0)
    assert d.at(0.0, UNKNOWN).want == UNKNOWN
    assert d.at(630.0, UNKNOWN).replicas is None
    timed_out = d.at(632.0, UNKNOWN)
    assert (timed_out.want, timed_out.replicas, timed_out.active) == (0, 0, "inactive")


def test_wakes_from_zero_when_load_returns() -> None:
    d = Driver(scaling())
    d.at(0.0, UNKNOWN)
    d.at(60.0, 0)
    assert d.at(62.0, 0).replicas == 0
    d.ready = 0
    woken = d.at(64.0, 1)
    assert (woken.want, woken.replicas, woken.active) == (1, 1, "activating")
    assert d.at(66.0, 1, ready=1).active == "active"


def test_unknown_desire_after_a_decision_keeps_the_status() -> None:
    d = Driver(scaling())
    d.at(0.0, UNKNOWN)
    d.at(2.0, 4)
    assert d.pa.desired_scale == 4
    # An inactive revision with no metrics stays in Proxy and keeps its last desired scale.
    d.at(60.0, 0)
    d.at(62.0, 0)
    d.pa.desired_scale = 0
    outcome = d.at(64.0, UNKNOWN)
    assert (outcome.want, outcome.replicas, outcome.mode) == (UNKNOWN, None, "Proxy")
    assert d.pa.desired_scale == 0
