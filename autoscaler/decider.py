"""The KPA decider: from the stable and panic averages of one revision's load, the number of pods it needs.

Each tick (every 2 s, or at once when the activator pokes a revision at zero) applies Knative's rules in
Knative's order: desired pods from stable and panic load over the target, clamped by the scale-up and
scale-down rates, raised to the activation scale, held while panicking, delayed by `scale-down-delay`;
then the excess burst capacity that decides whether the activator stays in the request path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from autoscaler.maxwindow import MaxWindow
from serving.autoscaling import Metric, RevisionScaling

TICK_INTERVAL: Final = 2.0
"""Seconds between decisions (Knative's tickInterval)."""
MIN_ACTIVATORS: Final = 2
"""Activators kept in a revision's path at the least (Knative's minActivators)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeciderSpec:
    """What the decider needs of a revision's settings (Knative's DeciderSpec)."""

    metric: Metric
    target_value: float
    """Per-pod value aimed at."""
    total_value: float
    """Per-pod value a pod can carry."""
    target_burst_capacity: float
    activator_capacity: float
    panic_threshold: float
    """Ratio of panic-window desired pods to ready pods that starts panic (2.0 = 200 %)."""
    stable_window: float
    scale_down_delay: float
    initial_scale: int
    activation_scale: int
    max_scale_up_rate: float
    max_scale_down_rate: float
    reachable: bool = True
    """Whether a route sends traffic to the revision; an unreachable one may drop to any size at once."""

    @classmethod
    def of(cls, scaling: RevisionScaling, *, reachable: bool = True) -> DeciderSpec:
        return cls(
            metric=scaling.metric,
            target_value=scaling.target,
            total_value=scaling.total,
            target_burst_capacity=scaling.target_burst_capacity,
            activator_capacity=scaling.activator_capacity,
            panic_threshold=scaling.panic_threshold,
            stable_window=scaling.stable_window,
            scale_down_delay=scaling.scale_down_delay,
            initial_scale=scaling.initial_scale,
            activation_scale=scaling.activation_scale,
            max_scale_up_rate=scaling.max_scale_up_rate,
            max_scale_down_rate=scaling.max_scale_down_rate,
            reachable=reachable,
        )

    def initial_excess_burst_capacity(self) -> int:
        """The burst capacity a new revision is assumed to have before its first decision (Knative's rule:
        the initial scale's capacity minus the target burst capacity)."""
        tbc = self.target_burst_capacity
        if tbc in (0, -1):
            return int(tbc)
        return math.trunc(self.initial_scale * self.total_value - tbc)


@dataclass(slots=True, kw_only=True)
class Decision:
    """One tick's outcome for a revision that had data to decide on. Treated as immutable; not frozen because
    one is built per revision per tick and frozen dataclasses are three times slower to build."""

    desired_pods: int
    excess_burst_capacity: int
    panic: bool
    stable: float
    """Observed metric over the stable window (revision total)."""
    panic_value: float
    """Observed metric over the panic window (revision total)."""
    desired_stable: int
    """Pods for the stable load after the rate limits (before panic hold and delay)."""
    desired_panic: int
    ready_pods: int


def excess_burst_capacity(spec: DeciderSpec, ready_pods: int, panic_value: float) -> int:
    """Spare capacity beyond the target burst capacity: negative keeps the activator in the path."""
    tbc = spec.target_burst_capacity
    if tbc == 0:
        return 0
    if tbc < 0:
        return -1
    return math.floor(ready_pods * spec.total_value - tbc - panic_value)


def activator_count(spec: DeciderSpec, ready_pods: int) -> int:
    """Activators to put in a revision's path so they can carry its capacity plus the burst capacity."""
    tbc = spec.target_burst_capacity
    if tbc == 0:
        return MIN_ACTIVATORS
    capacity = ready_pods * spec.total_value
    if tbc > 0:
        capacity += tbc
    return max(MIN_ACTIVATORS, math.ceil(capacity / spec.activator_capacity))


class Decider:
    """Knative's KPA decision for one revision; keeps the panic state and the scale-down-delay window.

    Created when the autoscaler first sees the revision: with more than one ready pod it starts in panic at
    that many pods, so a restarted autoscaler with no history does not scale a busy revision down.
    """

    __slots__ = ("_delay", "_max_panic_pods", "_panic_since", "_spec")

    def __init__(self, spec: DeciderSpec, *, ready_pods: int, now: float) -> None:
        self._spec = spec
        self._panic_since: float | None = now if ready_pods > 1 else None
        self._max_panic_pods = ready_pods
        self._delay = self._delay_window(spec)

    @staticmethod
    def _delay_window(spec: DeciderSpec) -> MaxWindow | None:
        # No window at all without a delay: a one-slot window would keep the larger of two decisions taken
        # within the same 2 s slot instead of the latest.
        if spec.scale_down_delay > 0:
            return MaxWindow(spec.scale_down_delay, TICK_INTERVAL)
        return None

    @property
    def spec(self) -> DeciderSpec:
        return self._spec

    @property
    def panicking(self) -> bool:
        return self._panic_since is not None

    def update(self, spec: DeciderSpec) -> None:
        if spec.scale_down_delay != self._spec.scale_down_delay:
            self._delay = self._delay_window(spec)
        self._spec = spec

    def decide(self, now: float, ready_pods: int, stable: float, panic: float) -> Decision:
        """Decide with the observed stable and panic values (revision totals) at `now`."""
        spec = self._spec
        ready = float(max(1, ready_pods))
        max_up = math.ceil(spec.max_scale_up_rate * ready)
        max_down = math.floor(ready / spec.max_scale_down_rate) if spec.reachable else 0
        dspc = math.ceil(stable / spec.target_value)
        dppc = math.ceil(panic / spec.target_value)
        desired_stable = min(max(dspc, max_down), max_up)
        desired_panic = min(max(dppc, max_down), max_up)
        activation = spec.activation_scale
        if activation > 1:
            if dspc > 0 and activation > desired_stable:
                desired_stable = activation
            if dppc > 0 and activation > desired_panic:
                desired_panic = activation

        over_threshold = dppc / ready >= spec.panic_threshold
        if over_threshold:
            # Entering or extending panic: the hold lasts a stable window after the last overload.
            self._panic_since = now
        elif self._panic_since is not None and self._panic_since + spec.stable_window < now:
            self._panic_since = None
            self._max_panic_pods = 0

        desired = desired_stable
        if self._panic_since is not None:
            desired = max(desired, desired_panic)
            # Never scale down while panicking.
            self._max_panic_pods = max(self._max_panic_pods, desired)
            desired = self._max_panic_pods

        if spec.reachable and self._delay is not None:
            self._delay.record(now, desired)
            desired = self._delay.current()

        return Decision(
            desired_pods=desired,
            excess_burst_capacity=excess_burst_capacity(spec, ready_pods, panic),
            panic=self._panic_since is not None,
            stable=stable,
            panic_value=panic,
            desired_stable=desired_stable,
            desired_panic=desired_panic,
            ready_pods=ready_pods,
        )
