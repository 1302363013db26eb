"""The requests being proxied right now: their total-timeout deadlines, and what shutdown waits for.

One sweeper enforces every deadline instead of one loop timer per request: a dict insert and delete per
request cost a tenth of scheduling and cancelling a timer. The sweeper sleeps until the earliest deadline
(every request gets the same timeout, so a new request never moves it earlier; one that would wakes it), and
not at all while nothing is in flight: a pod's queue-proxy does not wake 20 times a second for deadlines
minutes away, which matters when many pods share a few CPUs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Final, Protocol, cast

logger = logging.getLogger(__name__)

SWEEP_INTERVAL: Final = 0.05
"""Least seconds between two sweeps, so that deadlines falling close together are handled in one; a request
times out at most this much after its deadline (the timeout is whole seconds in Knative)."""

CANCEL_GRACE: Final = 5.0
"""Seconds cancelled upgrade tasks get to close their connections at shutdown."""


class Started(Protocol):
    """What the sweeper needs to know about an exchange: whether its response began."""

    @property
    def response_started(self) -> bool: ...


class Cancellable(Protocol):
    """What a request in flight is known by: the handler task running it, or the record of a request forwarded
    without a task (`queueproxy.handler`), which ends it with a timeout answer at once when cancelled."""

    def cancel(self) -> bool: ...


class InFlight:
    """Proxied requests (their handler tasks, or records of requests forwarded without one) with their
    deadlines; plain requests and upgrades apart.

    An upgraded connection (websocket) that got its 101 is exempt from the request timeout: it is a
    long-lived connection, not a slow request. At shutdown plain requests are waited for; upgrades get a
    bounded grace and are then cancelled, which closes both of their connections.
    """

    __slots__ = ("_entries", "_expired", "_idle", "_now", "_plain", "_sweep", "_sweep_at", "_waiting")

    def __init__(self, *, now: Callable[[], float] = time.monotonic) -> None:
        self._entries: dict[Cancellable, tuple[float, Started, bool]] = {}
        self._expired: set[Cancellable] = set()
        self._plain = 0
        self._waiting = False
        self._idle = asyncio.Event()
        self._sweep = asyncio.Event()
        """Wakes the sweeper: its timer fired, or `add` brought a deadline earlier than it planned for."""
        self._sweep_at = math.inf
        """When (on `now`'s clock) the sweeper plans to sweep next; infinity while it waits for a request."""
        self._now = now

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def plain(self) -> int:
        """Plain (not upgraded) requests in flight."""
        return self._plain

    def add(self, task: Cancellable, exchange: Started, upgrade: bool, deadline: float) -> None:
        self._entries[task] = (deadline, exchange, upgrade)
        if not upgrade:
            self._plain += 1
        if deadline < self._sweep_at:  # one comparison per request; true after an idle spell
            self._sweep_at = -math.inf
            self._sweep.set()

    def discard(self, task: Cancellable, upgrade: bool) -> None:
        del self._entries[task]
        if self._expired:
            self._expired.discard(task)
        if not upgrade:
            self._plain -= 1
            if self._waiting and not self._plain:
                self._idle.set()

    def expired(self, task: Cancellable) -> bool:
        """Whether the sweeper cancelled `task` because its deadline passed."""
        return task in self._expired

    def expire(self) -> int:
        """Cancel every request past its deadline (once); returns how many were cancelled now."""
        now = self._now()
        due = [
            task
            for task, (deadline, exchange, upgrade) in self._entries.items()
            if now >= deadline and task not in self._expired and not (upgrade and exchange.response_started)
        ]
        for task in due:
            # Listed first: a request forwarded without a task leaves `_entries` as it is cancelled.
            self._expired.add(task)
            try:
                task.cancel()
            except Exception:  # the sweeper must outlive any one request's failure
                logger.exception("ending a request at its deadline failed")
        return len(due)

    async def run_sweeper(self, interval: float = SWEEP_INTERVAL) -> None:
        """Expire requests past their deadline, sleeping until the next deadline that can expire."""
        loop = asyncio.get_running_loop()
        last = -math.inf
        while True:
            earliest = self._earliest()
            self._sweep_at = max(earliest, last + interval)
            self._sweep.clear()
            timer = None
            if self._sweep_at < math.inf:
                timer = loop.call_later(max(self._sweep_at - self._now(), 0.0), self._sweep.set)
            try:
                await self._sweep.wait()
            finally:
                if timer is not None:
                    timer.cancel()
            now = self._now()
            if now >= self._sweep_at or now >= self._earliest():
                self.expire()
                last = now

    def _earliest(self) -> float:
        """The earliest deadline that can still expire; infinity if none can."""
        return min(
            (
                deadline
                for task, (deadline, exchange, upgrade) in self._entries.items()
                if task not in self._expired and not (upgrade and exchange.response_started)
            ),
            default=math.inf,
        )

    async def wait_plain(self) -> None:
        """Return when no plain request is in flight."""
        self._waiting = True
        while self._plain:
            self._idle.clear()
            await self._idle.wait()

    async def close_upgrades(self, grace: float) -> None:
        """Give open upgraded connections `grace` seconds to end, then cancel them."""
        deadline = time.monotonic() + grace
        while (upgrades := self._upgrades()) and time.monotonic() < deadline:
            await asyncio.wait(upgrades, timeout=deadline - time.monotonic())
        upgrades = self._upgrades()
        if upgrades:
            logger.info("closing %d upgraded connection(s) still open after %.3gs", len(upgrades), grace)
            for task in upgrades:
                task.cancel()
            await asyncio.wait(upgrades, timeout=CANCEL_GRACE)

    def _upgrades(self) -> set[asyncio.Task[None]]:
        """Upgraded requests' tasks (an upgrade is never forwarded without its task)."""
        return {cast(asyncio.Task[None], task) for task, (_, _, upgrade) in self._entries.items() if upgrade}
