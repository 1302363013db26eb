"""Restart backoff for crashed local containers, after the kubelet's CrashLoopBackOff.

The kubelet restarts a crashed container at once, then waits 10 s, 20 s, ... up to 5 min, and forgets the
crashes once the container has run for 10 min. Locally the same shape is scaled down so that a fixed app
comes back quickly: immediate, then 1 s doubling up to 10 s, forgotten after 10 s of running.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class BackoffPolicy:
    base: float = 1.0
    """Delay before the second consecutive restart, seconds; doubles for each further crash."""
    cap: float = 10.0
    """Longest delay between restarts, seconds (the kubelet's cap is 5 min; 10 s suits a laptop)."""
    reset_after: float = 10.0
    """A container that ran this long before exiting starts its crash count afresh, seconds."""

    def delay(self, crashes: int) -> float:
        """Delay before restarting after the `crashes`-th consecutive crash (1-based)."""
        if crashes <= 1:
            return 0.0
        return min(self.cap, self.base * 2.0 ** (crashes - 2))


class CrashCounter:
    """Counts consecutive crashes of one container and says how long to wait before the next start."""

    __slots__ = ("_policy", "crashes", "restarts")

    def __init__(self, policy: BackoffPolicy) -> None:
        self._policy = policy
        self.crashes = 0
        """Consecutive crashes since the container last ran long enough to count as healthy."""
        self.restarts = 0
        """Every restart of the container, as Kubernetes' restartCount."""

    def crashed(self, ran_for: float) -> float:
        """Record an exit after running `ran_for` seconds; return the delay before the restart."""
        if ran_for >= self._policy.reset_after:
            self.crashes = 0
        self.crashes += 1
        self.restarts += 1
        return self._policy.delay(self.crashes)
