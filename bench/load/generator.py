"""Open-loop load generator: sends HTTP/1.1 requests on a fixed schedule over pooled keep-alive connections,
to loopback only, and records a sample per request with its latency from the scheduled send time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from time import monotonic
from typing import Final

from bench.load.connection import Connection, Pending
from bench.load.sample import CLIENT_CAP, CONNECT, RESET, TIMEOUT, Sample
from bench.load.schedule import Shot, Target

log = logging.getLogger(__name__)

_SLEEP_SLACK: Final = 0.0005
"""A request due within this many seconds is sent at once rather than after a sleep (timer granularity)."""
_SWEEP_INTERVAL: Final = 0.05


def latency(scheduled: float, sent: float, done: float) -> float:
    """Latency of one request: from its scheduled time, so a late send counts its lateness (no coordinated
    omission); from the send itself when it left a little early (within the timer slack), so a latency is
    never shorter than the exchange."""
    return done - min(scheduled, sent)


@dataclass(slots=True, kw_only=True)
class RunStats:
    """What the generator did, beside the samples: achieved rate and how late it sent (its own health)."""

    planned: int = 0
    sent: int = 0
    completed: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    max_send_lag: float = 0.0
    """Worst delay between a request's scheduled and actual send time, in seconds."""
    connections_opened: int = 0
    resent: int = 0
    """Requests sent again because the server had closed their idle keep-alive connection."""

    @property
    def achieved_rate(self) -> float:
        span = self.last_at - self.first_at
        return (self.sent - 1) / span if span > 0 and self.sent > 1 else 0.0


class LoadGenerator:
    """Runs one schedule of shots; collects a `Sample` per shot.

    Each request leaves at its scheduled time (t0 + offset) whether or not earlier ones have returned, and
    its latency is measured from that scheduled time, so a slow server cannot hide its delay by slowing the
    sender (no coordinated omission). Requests are written by asyncio protocols and parsed with httptools (no
    task per request), which lets one core drive a few thousand requests per second. Times come from
    `time.monotonic()`, not the loop's clock: uvloop's clock ticks in whole milliseconds.

    Invariants: at most `max_outstanding` requests are in flight (a shot that finds the cap reached is
    recorded as a `client-cap` error, never delayed, so the schedule stays open-loop); every request ends
    within `timeout` seconds of its scheduled time (then it is a `timeout` error and its connection closed).
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        max_outstanding: int = 10_000,
        on_sample: Callable[[Sample], None] | None = None,
        resend_after_idle: float = 1.0,
    ) -> None:
        if timeout <= 0 or max_outstanding <= 0:
            raise ValueError("timeout and max_outstanding must be positive")
        self.timeout = timeout
        self.max_outstanding = max_outstanding
        self.resend_after_idle = resend_after_idle
        """A request lost with its connection is sent again only if that keep-alive connection had been idle
        this long (seconds): then the server most likely closed it as idle while the request was on its
        way. On a connection in use, a close without an answer is the server's failure and is recorded."""
        self.samples: list[Sample] = []
        self.stats = RunStats()
        self._on_sample = on_sample
        self._idle: dict[tuple[str, int], list[Connection]] = {}
        self._open: set[Connection] = set()
        self._outstanding: dict[Pending, None] = {}
        self._connecting: set[asyncio.Task[None]] = set()
        self._t0 = 0.0
        self._drained: asyncio.Event | None = None

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    @property
    def t0(self) -> float:
        """`time.monotonic()` of offset 0 of the schedule (valid once `run` has started)."""
        return self._t0

    async def run(self, shots: Iterable[Shot], *, t0: float | None = None) -> list[Sample]:
        """Send every shot on schedule, wait for the last answers (or their timeout), close connections."""
        self._drained = asyncio.Event()
        self._t0 = monotonic() + 0.01 if t0 is None else t0
        sweeper = asyncio.create_task(self._sweep())
        try:
            for shot in shots:
                due = self._t0 + shot.at
                delay = due - monotonic()
                if delay > _SLEEP_SLACK:
                    await asyncio.sleep(delay)
                self._fire(shot.target, due, monotonic())
            while self._outstanding or self._connecting:
                self._drained.clear()
                await self._drained.wait()
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            for task in list(self._connecting):
                task.cancel()
            for conn in list(self._open):
                conn.close()
            for pending in list(self._outstanding):
                self.complete(pending, RESET)
        return self.samples

    def _fire(self, target: Target, due: float, now: float) -> None:
        stats = self.stats
        stats.planned += 1
        pending = Pending(target, due, now)
        if len(self._outstanding) >= self.max_outstanding:
            self._record(pending, CLIENT_CAP, now)
            return
        stats.sent += 1
        if stats.sent == 1:
            stats.first_at = now - self._t0
        stats.last_at = now - self._t0
        stats.max_send_lag = max(stats.max_send_lag, now - due)
        self._outstanding[pending] = None
        idle = self._idle.get((target.host, target.port))
        while idle:
            conn = idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                conn.send(pending)
                return
        self._connect(pending)

    def _connect(self, pending: Pending) -> None:
        task = asyncio.create_task(self._connect_and_send(pending))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    def resend(self, pending: Pending) -> None:
        """Pool: send a request again on a new connection (its idle one was closed as it went out)."""
        if pending in self._outstanding:
            self.stats.resent += 1
            self._connect(pending)

    async def _connect_and_send(self, pending: Pending) -> None:
        loop = asyncio.get_running_loop()
        target = pending.target
        key = (target.host, target.port)
        try:
            _, conn = await loop.create_connection(lambda: Connection(self, key), target.host, target.port)
        except OSError:
            self.complete(pending, CONNECT)
            return
        self.stats.connections_opened += 1
        if pending not in self._outstanding:  # timed out while connecting
            self.release(conn)
            return
        self._open.add(conn)
        conn.send(pending)

    def release(self, conn: Connection) -> None:
        """Pool: an answered connection is idle again, ready for the next request to its address."""
        conn.idle_since = monotonic()
        self._open.add(conn)
        self._idle.setdefault(conn.key, []).append(conn)

    def forget(self, conn: Connection) -> None:
        """Pool: a closed connection leaves every pool."""
        self._open.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def complete(self, pending: Pending, error: str | None) -> None:
        """Pool: a request ended (answered, or failed with an error kind); recorded once."""
        if pending not in self._outstanding:
            return
        del self._outstanding[pending]
        self.stats.completed += 1
        self._record(pending, error, monotonic())
        if not self._outstanding and not self._connecting and self._drained is not None:
            self._drained.set()

    def _record(self, pending: Pending, error: str | None, now: float) -> None:
        sample = Sample(
            target=pending.target.name,
            scheduled=pending.scheduled - self._t0,
            send_lag=pending.sent - pending.scheduled,
            latency=latency(pending.scheduled, pending.sent, now),
            status=0 if error else pending.status,
            error=error,
            activator_ms=pending.activator_ms,
            revision=pending.revision,
            nbytes=pending.nbytes,
        )
        self.samples.append(sample)
        if self._on_sample is not None:
            self._on_sample(sample)

    async def _sweep(self) -> None:
        """Time out requests past their deadline; the oldest are first in the insertion-ordered dict."""
        assert self._drained is not None
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL)
            deadline = monotonic() - self.timeout
            expired = []
            for pending in self._outstanding:
                if pending.scheduled > deadline:
                    break
                expired.append(pending)
            for pending in expired:
                conn = pending.conn
                if conn is not None and conn.pending is pending:
                    conn.fail(TIMEOUT)
                else:
                    self.complete(pending, TIMEOUT)
            if not self._outstanding and not self._connecting:
                self._drained.set()
