"""Open-loop load generator: sends HTTP/1.1 requests on a fixed schedule over pooled keep-alive connections.

Each request leaves at its scheduled time (t0 + offset) whether or not earlier ones have returned, and its
latency is measured from that scheduled time, so a slow server cannot hide its delay by slowing the sender
(no coordinated omission). Requests are written by asyncio protocols and parsed with httptools (no task per
request), which lets one core drive a few thousand requests per second. Traffic goes to loopback only.
Times come from `time.monotonic()`, not the loop's clock: uvloop's clock ticks in whole milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from time import monotonic
from typing import Final, cast

import httptools

from controller.bench.sample import Sample, parse_server_timing

log = logging.getLogger(__name__)

LOOPBACK: Final = frozenset({"127.0.0.1"})
REVISION_HEADER: Final = b"x-bench-revision"
"""Response header the benchmark app sets to the revision (or version) that answered."""

# Error kinds recorded on samples that got no HTTP response.
CONNECT: Final = "connect"
TIMEOUT: Final = "timeout"
RESET: Final = "reset"
PROTOCOL: Final = "protocol"
CLIENT_CAP: Final = "client-cap"

_SLEEP_SLACK: Final = 0.0005
"""A request due within this many seconds is sent at once rather than after a sleep (timer granularity)."""
_SWEEP_INTERVAL: Final = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One kind of request: where it goes and what it says. `name` groups samples in the summary."""

    name: str
    port: int
    host: str = "127.0.0.1"
    host_header: str = "127.0.0.1"
    path: str = "/"
    method: str = "GET"
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    wire: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.host not in LOOPBACK:
            raise ValueError(f"target {self.name!r}: traffic goes to 127.0.0.1 only, not {self.host!r}")
        lines = [
            f"{self.method} {self.path} HTTP/1.1",
            f"Host: {self.host_header}",
            "User-Agent: serving-bench",
        ]
        lines += [f"{name}: {value}" for name, value in self.headers]
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(self.body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        object.__setattr__(self, "wire", head + self.body)


@dataclass(frozen=True, slots=True)
class Shot:
    """One request to send `at` seconds after the start of the run."""

    at: float
    target: Target


def constant_rate(targets: list[Target], rate: float, duration: float, start: float = 0.0) -> Iterator[Shot]:
    """`rate` requests per second for `duration` seconds, cycling through `targets` in order."""
    if rate <= 0 or duration <= 0:
        return
    count = round(rate * duration)
    for i in range(count):
        yield Shot(start + i / rate, targets[i % len(targets)])


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


class _Pending:
    __slots__ = ("activator_ms", "conn", "nbytes", "revision", "scheduled", "sent", "status", "target")

    def __init__(self, target: Target, scheduled: float, sent: float) -> None:
        self.target = target
        self.scheduled = scheduled
        self.sent = sent
        self.conn: _Connection | None = None
        self.status = 0
        self.activator_ms: float | None = None
        self.revision: str | None = None
        self.nbytes = 0


class _Connection(asyncio.Protocol):
    """One keep-alive client connection carrying one request at a time."""

    def __init__(self, gen: LoadGenerator, key: tuple[str, int]) -> None:
        self._gen = gen
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.pending: _Pending | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._keep_alive = True
        self._served = 0  # responses completed here: a reused connection may have been closed as idle
        self._answered = False  # whether any byte of the current response arrived
        self._framed = False  # whether the current response has a Content-Length or chunked body
        self.idle_since = 0.0
        self._idle_before_send = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport (uvloop's is not a subclass)

    def data_received(self, data: bytes) -> None:
        if self.pending is None:
            self.close()  # bytes nobody asked for: the connection is no longer trustworthy
            return
        self._answered = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._fail(PROTOCOL)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._gen._forget(self)
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        if exc is None and pending.status and not self._framed:
            self._gen._complete(pending, None)  # a body delimited by the end of the connection (HTTP/1.0)
        elif self._served and not self._answered and self._idle_before_send >= self._gen.resend_after_idle:
            # The server closed an idle keep-alive connection as the request went out: nothing reached
            # the app, so send it again on a fresh connection (what HTTP clients do), same schedule.
            self._gen._resend(pending)
        else:
            self._gen._complete(pending, RESET)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        pending = self.pending
        if pending is None:
            return
        lowered = name.lower()
        if lowered == b"server-timing":
            ms = parse_server_timing(value.decode("latin-1"))
            if ms is not None:
                pending.activator_ms = ms
        elif lowered == REVISION_HEADER:
            pending.revision = value.decode("latin-1")
        elif lowered in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        if self.pending is not None:
            self.pending.status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self.pending is not None:
            self.pending.nbytes += len(body)

    def on_message_complete(self) -> None:
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        self._served += 1
        self._gen._complete(pending, None)
        if self._keep_alive and self.transport is not None and not self.transport.is_closing():
            self._gen._release(self)
        else:
            self.close()

    # driven by the generator
    def send(self, pending: _Pending) -> None:
        assert self.transport is not None
        self.pending = pending
        self._answered = False
        self._framed = False
        self._idle_before_send = monotonic() - self.idle_since
        pending.conn = self
        self.transport.write(pending.target.wire)

    def _fail(self, kind: str) -> None:
        pending = self.pending
        self.pending = None
        if pending is not None:
            self._gen._complete(pending, kind)
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        self._gen._forget(self)


class LoadGenerator:
    """Runs one schedule of shots; collects a `Sample` per shot.

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
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._outstanding: dict[_Pending, None] = {}
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
                self._complete(pending, RESET)
        return self.samples

    def _fire(self, target: Target, due: float, now: float) -> None:
        stats = self.stats
        stats.planned += 1
        pending = _Pending(target, due, now)
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

    def _connect(self, pending: _Pending) -> None:
        task = asyncio.create_task(self._connect_and_send(pending))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    def _resend(self, pending: _Pending) -> None:
        if pending in self._outstanding:
            self.stats.resent += 1
            self._connect(pending)

    async def _connect_and_send(self, pending: _Pending) -> None:
        loop = asyncio.get_running_loop()
        target = pending.target
        key = (target.host, target.port)
        try:
            _, conn = await loop.create_connection(lambda: _Connection(self, key), target.host, target.port)
        except OSError:
            self._complete(pending, CONNECT)
            return
        self.stats.connections_opened += 1
        if pending not in self._outstanding:  # timed out while connecting
            self._release(conn)
            return
        self._open.add(conn)
        conn.send(pending)

    def _release(self, conn: _Connection) -> None:
        conn.idle_since = monotonic()
        self._open.add(conn)
        self._idle.setdefault(conn.key, []).append(conn)

    def _forget(self, conn: _Connection) -> None:
        self._open.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def _complete(self, pending: _Pending, error: str | None) -> None:
        if pending not in self._outstanding:
            return
        del self._outstanding[pending]
        self.stats.completed += 1
        self._record(pending, error, monotonic())
        if not self._outstanding and not self._connecting and self._drained is not None:
            self._drained.set()

    def _record(self, pending: _Pending, error: str | None, now: float) -> None:
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
                    conn._fail(TIMEOUT)
                else:
                    self._complete(pending, TIMEOUT)
            if not self._outstanding and not self._connecting:
                self._drained.set()
