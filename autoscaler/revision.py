"""Everything the autoscaler keeps for one revision: load windows, decider and scale-to-zero state.

The live autoscaler and `serving simulate` drive the same object: record load, then `tick` to decide and
reconcile. Pure and synchronous; time comes in as `now`.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoscaler.collector import Collection
from autoscaler.decider import Decider, DeciderSpec, Decision
from autoscaler.scaler import UNKNOWN, Outcome, PodAutoscaler
from serving.autoscaling import RevisionScaling
from serving.stat import Stat


@dataclass(slots=True)
class Tick:
    """The result of one tick: the decision (None when there was no data) and what it leads to. Treated as
    immutable."""

    decision: Decision | None
    outcome: Outcome
    desired: int
    """The decider's latest desired pods (kept across ticks without data; -1 before the first decision)."""
    excess_burst_capacity: int
    """Likewise kept; before any decision it is what the initial scale would give."""
    panic: bool


class RevisionAutoscaler:
    """Load windows + KPA decider + PodAutoscaler for one revision."""

    __slots__ = ("collection", "decider", "desired", "excess_burst_capacity", "pa", "reachable", "scaling")

    def __init__(
        self, scaling: RevisionScaling, *, now: float, ready_pods: int, reachable: bool = True
    ) -> None:
        self.scaling = scaling
        self.reachable = reachable
        spec = DeciderSpec.of(scaling, reachable=reachable)
        self.collection = Collection(
            stable_window=scaling.stable_window,
            panic_window=scaling.panic_window,
            aggregation=scaling.aggregation,
            scraped=scaling.target_burst_capacity != -1,
        )
        self.decider = Decider(spec, ready_pods=ready_pods, now=now)
        self.pa = PodAutoscaler(now)
        self.desired = UNKNOWN
        self.excess_burst_capacity = spec.initial_excess_burst_capacity()

    @property
    def spec(self) -> DeciderSpec:
        return self.decider.spec

    def update(self, scaling: RevisionScaling, *, now: float, reachable: bool = True) -> None:
        """Apply changed settings, keeping the load history (rebuilt only if the aggregation changes)."""
        if scaling == self.scaling and reachable == self.reachable:
            return
        if scaling.aggregation != self.scaling.aggregation:
            self.collection = Collection(
                stable_window=scaling.stable_window,
                panic_window=scaling.panic_window,
                aggregation=scaling.aggregation,
                scraped=scaling.target_burst_capacity != -1,
            )
        else:
            self.collection.resize(
                stable_window=scaling.stable_window, panic_window=scaling.panic_window, now=now
            )
            self.collection.scraped = scaling.target_burst_capacity != -1
        self.scaling = scaling
        self.reachable = reachable
        self.decider.update(DeciderSpec.of(scaling, reachable=reachable))

    def record(self, now: float, stat: Stat) -> None:
        self.collection.record(now, stat)

    def decide(self, now: float, ready_pods: int) -> Decision | None:
        """Run the decider if the windows hold data; keeps the latest desired pods and burst capacity."""
        observed = self.collection.stable_and_panic(self.spec.metric, now)
        if observed is None:
            return None
        decision = self.decider.decide(now, ready_pods, *observed)
        self.desired = decision.desired_pods
        self.excess_burst_capacity = decision.excess_burst_capacity
        return decision

    def needs_activator_probe(self) -> bool:
        return self.pa.needs_activator_probe(self.scaling, self.desired, reachable=self.reachable)

    def reconcile(self, now: float, ready_pods: int, *, activator_in_path: bool = True) -> Outcome:
        return self.pa.reconcile(
            now=now,
            scaling=self.scaling,
            spec=self.spec,
            desired=self.desired,
            excess_burst_capacity=self.excess_burst_capacity,
            ready_pods=ready_pods,
            activator_in_path=activator_in_path,
            reachable=self.reachable,
        )

    def tick(self, now: float, ready_pods: int, *, activator_in_path: bool = True) -> Tick:
        decision = self.decide(now, ready_pods)
        outcome = self.reconcile(now, ready_pods, activator_in_path=activator_in_path)
        return Tick(
            decision=decision,
            outcome=outcome,
            desired=self.desired,
            excess_burst_capacity=self.excess_burst_capacity,
            panic=self.decider.panicking,
        )
