"""Per-revision admission: hold requests while a revision lacks capacity, then hand each one a pod.

One `RevisionThrottler` per revision, so a revision with a long queue never slows another (no shared lock or
queue). A revision-wide breaker admits at most CC x (pods assigned to this activator) requests, keeps at most
`queue_depth` waiting (Knative: 10,000) and rejects the rest at once; each admitted request then reserves a
slot on one pod through the load-balancing policy.

The long queue is there to ride out a cold start or a scale-up. Once a revision runs as many healthy pods as
its max-scale allows, no capacity is coming, and a long queue would only make every admitted request wait
behind the excess (an overload at 10x capacity would hold thousands, each for seconds). So a saturated
revision keeps at most `queue_per_slot` waiting per slot of capacity and turns the rest away at once (503 with
Retry-After): admitted requests keep their latency, and the excess learns at once that it should retry.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable

from activator.balancer import PodTracker, Policy, policy_for
from activator.subset import assign_slice
from serving.breaker import Breaker, QueueFull

__all__ = ["QueueFull", "RevisionThrottler"]

UNLIMITED_CAPACITY = 2**31 - 1
"""Breaker capacity used for containerConcurrency 0 once there is a pod (Knative uses MaxInt32 too): the
breaker then only blocks while there are no pods."""


class RevisionThrottler:
    """Admission control for one revision, driven by its set of healthy pods.

    Invariant for CC > 0: breaker capacity == CC x assigned pods, and each admitted request holds one slot on
    the tracker it was given (trackers of pods that went away keep counting their own requests, and those
    count against the breaker until they finish). So a request the breaker admits always finds an assigned
    pod with a free slot. Only one event loop touches a throttler; nothing here blocks except `acquire`.
    """

    __slots__ = (
        "_assigned",
        "_breaker",
        "_changed",
        "_container_concurrency",
        "_count",
        "_index",
        "_max_scale",
        "_policy",
        "_queue_depth",
        "_queue_per_slot",
        "_rng",
        "_trackers",
    )

    def __init__(
        self,
        *,
        container_concurrency: int,
        queue_depth: int,
        queue_per_slot: int = 1,
        index: int = 0,
        count: int = 1,
        rng: random.Random | None = None,
    ) -> None:
        if container_concurrency < 0:
            raise ValueError("container concurrency must be 0 or more")
        if queue_per_slot < 0:
            raise ValueError("queue per slot must be 0 or more")
        if not 0 <= index < count:
            raise ValueError("activator index must be in [0, count)")
        self._container_concurrency = container_concurrency
        self._index = index
        self._count = count
        self._rng = rng if rng is not None else random.Random()
        self._policy: Policy = policy_for(container_concurrency, self._rng)
        self._queue_depth = queue_depth
        self._queue_per_slot = queue_per_slot
        self._max_scale = 0
        self._breaker = Breaker(capacity=0, queue_depth=queue_depth)
        self._trackers: dict[str, PodTracker] = {}
        self._assigned: list[PodTracker] = []
        self._changed = asyncio.Event()

    @property
    def container_concurrency(self) -> int:
        return self._container_concurrency

    @property
    def capacity(self) -> int:
        return self._breaker.capacity

    @property
    def waiting(self) -> int:
        """Requests queued for a slot."""
        return self._breaker.waiting

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet released."""
        return self._breaker.in_flight

    @property
    def saturated(self) -> bool:
        """Whether the revision runs as many healthy pods as its max-scale allows, each with a bounded
        concurrency: no more capacity is coming, so only a short queue is kept."""
        return 0 < self._max_scale <= len(self._trackers) and self._container_concurrency > 0

    @property
    def assigned(self) -> list[str]:
        """Addresses of the pods this activator sends to, in address order."""
        return [t.address for t in self._assigned]

    def tracker(self, address: str) -> PodTracker | None:
        return self._trackers.get(address)

    def try_acquire(self) -> PodTracker | None:
        """Admit and place a request without waiting, or None if it would have to queue."""
        if not self._breaker.try_acquire():
            return None
        tracker = self._policy(self._assigned)
        if tracker is None:
            self._breaker.release()
        return tracker

    async def acquire(self) -> PodTracker:
        """Wait for a slot and a pod; raises `QueueFull` at once when `queue_depth` requests already wait.

        Cancellation (client gone, timeout) leaves the queue immediately and holds nothing.
        """
        while True:
            await self._breaker.acquire()
            tracker = self._policy(self._assigned)
            if tracker is not None:
                return tracker
            # Only reachable if pods and capacity disagreed; wait for the next change instead of spinning.
            self._breaker.release()
            await self._changed.wait()

    def release(self, tracker: PodTracker) -> None:
        tracker.release()
        self._breaker.release()

    def update_backends(self, addresses: Iterable[str]) -> None:
        """Set the revision's healthy pods; waiting requests are admitted at once if capacity grew."""
        wanted = sorted(set(addresses))
        previous = self._trackers
        self._trackers = {a: previous.get(a) or PodTracker(a, self._container_concurrency) for a in wanted}
        self._reassign()

    def update_subset(self, index: int, count: int) -> None:
        """This activator is now `index` of `count` sharing the revision's pods (the activators scaled)."""
        if (index, count) == (self._index, self._count):
            return
        self._index, self._count = index, count
        self._reassign()

    def update_max_scale(self, max_scale: int) -> None:
        """The most pods the revision may have (0: unbounded), as the autoscaler computes it."""
        if max_scale < 0:
            raise ValueError("max-scale must be 0 or more")
        if max_scale != self._max_scale:
            self._max_scale = max_scale
            self._bound_queue()

    def update_concurrency(self, container_concurrency: int) -> None:
        if container_concurrency == self._container_concurrency:
            return
        if container_concurrency < 0:
            raise ValueError("container concurrency must be 0 or more")
        self._container_concurrency = container_concurrency
        self._policy = policy_for(container_concurrency, self._rng)
        for tracker in self._trackers.values():
            tracker.capacity = container_concurrency
        self._reassign()

    def _reassign(self) -> None:
        ordered = [self._trackers[a] for a in sorted(self._trackers)]
        cc = self._container_concurrency
        if cc > 0:
            chosen = set(assign_slice([t.address for t in ordered], self._index, self._count))
            ordered = [t for t in ordered if t.address in chosen]
        # Trackers first, capacity second: a request admitted by the new capacity must find its pod.
        self._assigned = ordered
        if not ordered:
            capacity = 0
        elif cc == 0:
            capacity = UNLIMITED_CAPACITY
        else:
            capacity = min(cc * len(ordered), UNLIMITED_CAPACITY)
        self._breaker.set_capacity(capacity)
        self._bound_queue()
        self._changed.set()
        self._changed.clear()

    def _bound_queue(self) -> None:
        depth = self._queue_depth
        if self.saturated:
            depth = min(depth, self._breaker.capacity * self._queue_per_slot)
        self._breaker.set_queue_depth(depth)
