"""A breaker with Knative's semantics: `capacity` in flight, `queue_depth` more waiting, then fail fast.

Used by the queue-proxy (capacity = containerConcurrency, queue = 10 x that) and by the activator's
per-revision throttler, whose capacity changes as pods come and go. Waiters are served first-come
first-served; a waiter that is cancelled (client gone, timeout) leaves the queue at once and frees its place.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class QueueFull(Exception):
    """The breaker's queue is full; the request is rejected without waiting (503)."""


class Breaker:
    """Admission control: at most `capacity` holders, at most `queue_depth` waiters.

    Not thread-safe; all calls come from one event loop. `acquire` either returns holding a slot, raises
    `QueueFull` immediately, or propagates cancellation having released everything it held.
    """

    __slots__ = ("_capacity", "_in_flight", "_queue_depth", "_waiters")

    def __init__(self, *, capacity: int, queue_depth: int) -> None:
        if capacity < 0 or queue_depth < 0:
            raise ValueError("capacity and queue depth must be 0 or more")
        self._capacity = capacity
        self._queue_depth = queue_depth
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody is queued ahead; never waits."""
        if self._in_flight < self._capacity and not self._waiters:
            self._in_flight += 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        if len(self._waiters) >= self._queue_depth:
            raise QueueFull
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as we were cancelled: give it to the next waiter.
                self.release()
            else:
                with contextlib.suppress(ValueError):  # already skipped by _hand_over
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        if self._in_flight <= 0:
            raise RuntimeError("release without acquire")
        self._in_flight -= 1
        self._hand_over()

    def set_capacity(self, capacity: int) -> None:
        """Change the number of slots (the activator does as pods appear); waiters are admitted at once."""
        if capacity < 0:
            raise ValueError("capacity must be 0 or more")
        self._capacity = capacity
        self._hand_over()

    def set_queue_depth(self, queue_depth: int) -> None:
        """Change how many may wait; lowering it below the current queue turns new requests away without
        dropping those already waiting (they were admitted and keep their place)."""
        if queue_depth < 0:
            raise ValueError("queue depth must be 0 or more")
        self._queue_depth = queue_depth

    @property
    def queue_depth(self) -> int:
        return self._queue_depth

    def _hand_over(self) -> None:
        while self._waiters and self._in_flight < self._capacity:
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            self._in_flight += 1
            waiter.set_result(None)
