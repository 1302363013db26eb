"""From the decider's desire to the replicas a revision gets: min/max/initial scale, the scale-to-zero rules,
the routing mode (activator in or out of the path) and the revision's active state.

This is Knative's PodAutoscaler reconcile for the KPA class: a revision goes to zero only after it was active
for a stable window, the activator is verified in its path, and it has been inactive for the grace period
(sooner when the activator has been in the path that long already) and for the last pod's retention period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from autoscaler.decider import DeciderSpec, activator_count
from serving.autoscaling import RevisionScaling
from serving.platform import Mode

Active = Literal["activating", "active", "inactive"]

UNKNOWN: Final = -1
"""A desired scale that is not known yet (no metrics since the autoscaler started)."""
PROGRESS_DEADLINE: Final = 600.0
"""Seconds a revision may take to become ready (Knative's config-deployment default)."""
ACTIVATION_TIMEOUT_BUFFER: Final = 30.0
"""Extra seconds before a revision that never activated is scaled to zero (Knative's buffer)."""


@dataclass(slots=True, kw_only=True)
class Outcome:
    """One reconcile of one revision. Treated as immutable (not frozen: one is built per revision per
    tick)."""

    want: int
    """The revision's desired scale after bounds and scale-to-zero rules (-1 while unknown)."""
    replicas: int | None
    """Replicas to set on the platform now, or None to leave them as they are."""
    mode: Mode
    activators: int
    active: Active


def apply_bounds(low: int, high: int, value: int) -> int:
    """Clamp to [low, high]; high 0 means unbounded, and low wins if the bounds cross."""
    if value < low:
        return low
    if high != 0 and value > high:
        return high
    return value


class PodAutoscaler:
    """The scale-to-zero and routing state of one revision; `reconcile` runs after every decider tick.

    Starts as Knative's new PodAutoscaler: activating, activator in the path (Proxy). Times are seconds on the
    autoscaler's clock.
    """

    __slots__ = (
        "_active",
        "_active_reason",
        "_active_since",
        "desired_scale",
        "initialized",
        "mode",
        "proxy_since",
    )

    def __init__(self, now: float) -> None:
        self._active: Active = "activating"
        self._active_reason = ""
        self._active_since = now
        self.initialized = False
        """The revision reached its initial scale once; initial scale no longer applies."""
        self.mode: Mode = "Proxy"
        self.proxy_since: float | None = now
        self.desired_scale: int | None = None
        """Last known desired scale (kept through a restart's unknown ticks)."""

    @property
    def active(self) -> Active:
        return self._active

    def _mark(self, state: Active, now: float, reason: str = "") -> None:
        if (state, reason) != (self._active, self._active_reason):
            self._active = state
            self._active_reason = reason
            self._active_since = now

    def _bounds(self, scaling: RevisionScaling, reachable: bool) -> tuple[int, int]:
        return (scaling.min_scale if reachable else 0), scaling.max_scale

    def needs_activator_probe(
        self, scaling: RevisionScaling, desired: int, *, reachable: bool = True
    ) -> bool:
        """Whether `reconcile` will ask if the activator is in the path (only on the way to zero)."""
        low, high = self._bounds(scaling, reachable)
        return (
            self._active == "inactive"
            and scaling.enable_scale_to_zero
            and scaling.target_burst_capacity != -1
            and desired >= 0
            and apply_bounds(low, high, desired) == 0
        )

    def reconcile(
        self,
        *,
        now: float,
        scaling: RevisionScaling,
        spec: DeciderSpec,
        desired: int,
        excess_burst_capacity: int,
        ready_pods: int,
        activator_in_path: bool = True,
        reachable: bool = True,
        progress_deadline: float = PROGRESS_DEADLINE,
    ) -> Outcome:
        """Turn the decider's latest desire (`UNKNOWN` before any decision) into replicas and a mode."""
        want, apply = self._scale(now, scaling, desired, activator_in_path, reachable, progress_deadline)
        # The activator leaves the path only with pods wanted and enough spare capacity for a burst.
        mode: Mode = "Serve" if want > 0 and excess_burst_capacity >= 0 else "Proxy"
        if mode != self.mode:
            self.mode = mode
            self.proxy_since = now if mode == "Proxy" else None
        if want != UNKNOWN or self.desired_scale is None or self.desired_scale < 0:
            self.desired_scale = want
        self._update_active(now, scaling, want, ready_pods, reachable)
        return Outcome(
            want=want,
            replicas=want if apply else None,
            mode=mode,
            activators=activator_count(spec, ready_pods),
            active=self._active,
        )

    def _scale(
        self,
        now: float,
        scaling: RevisionScaling,
        desired: int,
        activator_in_path: bool,
        reachable: bool,
        progress_deadline: float,
    ) -> tuple[int, bool]:
        if desired < 0 and self._active != "activating":
            return desired, False  # no metrics yet
        low, high = self._bounds(scaling, reachable)
        if scaling.initial_scale > 1 and not self.initialized and reachable:
            low = max(scaling.initial_scale, low)
        desired = apply_bounds(low, high, desired)
        if desired != 0:
            return desired, True
        if not scaling.enable_scale_to_zero:
            return 1, True
        if self._active == "activating":
            if now - self._active_since > progress_deadline + ACTIVATION_TIMEOUT_BUFFER:
                return 0, True  # never became ready: give up and free the pods
            return UNKNOWN, False
        if self._active == "active":
            if now - self._active_since >= scaling.stable_window:
                return 0, False  # mark inactive; the activator goes in the path first
            return 1, True
        if scaling.target_burst_capacity != -1 and not activator_in_path:
            return 0, False
        retention = scaling.scale_to_zero_pod_retention_period if reachable else 0.0
        inactive_for = now - self._active_since
        if inactive_for >= max(scaling.scale_to_zero_grace_period, retention):
            return 0, True
        if retention > 0 and inactive_for < retention:
            return 0, False
        proxy_for = 0.0 if self.proxy_since is None else now - self.proxy_since
        return 0, scaling.scale_to_zero_grace_period - proxy_for <= 0

    def _update_active(
        self, now: float, scaling: RevisionScaling, want: int, ready_pods: int, reachable: bool
    ) -> None:
        low = scaling.min_scale if reachable else 0
        min_ready = max(low, scaling.initial_scale) if not self.initialized else max(low, 1)
        if ready_pods >= min_ready:
            self.initialized = True
        if want == 0 or min_ready == 0:
            timed_out = self._active == "activating" and min_ready > 0
            self._mark("inactive", now, "TimedOut" if timed_out else "NoTraffic")
        elif ready_pods < min_ready:
            if want > 0 or self._active != "inactive":
                self._mark("activating", now)
            else:
                self._mark("inactive", now, "NoTraffic")
        elif want > 0 or self._active != "inactive":
            self._mark("active", now)
