"""The activator's load reports to the autoscaler: an immediate poke on a revision's first request, then
1 s time-weighted averages, as `WireStatMessages` over a durable websocket.

Reporting follows Knative's activator: a revision is tracked from its first request; that request is reported
at once (concurrency 1, count 1) so a revision at zero starts scaling without waiting for the next tick; the
next report subtracts it again. A revision is reported every second while it has traffic, once more with
zeros after a window with none (so the autoscaler sees the drop), and then forgotten until its next request.
Concurrency here includes requests still waiting in the activator: that is the demand a cold revision has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

import aiohttp

from serving.clock import Clock
from serving.concurrency import RequestStats
from serving.platform import RevisionKey
from serving.stat import RevisionStat, Stat, encode_wire

log = logging.getLogger(__name__)

REPORT_PERIOD: Final = 1.0
"""Seconds between reports (Knative's activator reporting period)."""
BACKOFF_START: Final = 0.1
BACKOFF_MAX: Final = 2.0
"""Reconnect delays to the autoscaler double from 100 ms up to 2 s: a restarted autoscaler is found fast,
a dead one is not hammered."""
MAX_PENDING: Final = 64
"""Messages queued for a slow websocket before new ones are dropped (each is a full report)."""


class RevisionLoad:
    """One revision's load in the current window; `refs` counts its requests inside the activator."""

    __slots__ = ("first", "refs", "stats")

    def __init__(self, now: float) -> None:
        self.stats = RequestStats(now)
        self.refs = 0
        self.first = 1.0


class StatReporter:
    """Tracks per-revision load and turns it into stat messages; `send` gets encoded `WireStatMessages`."""

    def __init__(self, *, pod_name: str, clock: Clock, send: Callable[[bytes], None]) -> None:
        self._pod_name = pod_name
        self._clock = clock
        self._send = send
        self._loads: dict[RevisionKey, RevisionLoad] = {}

    def request_in(self, key: RevisionKey) -> RevisionLoad:
        """A request for `key` arrived (hot path). Pokes the autoscaler on the revision's first request."""
        now = self._clock.now()
        load = self._loads.get(key)
        if load is None:
            load = self._loads[key] = RevisionLoad(now)
            poke = Stat(
                pod_name=self._pod_name,
                average_concurrent_requests=1.0,
                request_count=1.0,
                timestamp=time.time_ns(),
            )
            self._send(encode_wire([RevisionStat(key.namespace, key.name, poke)]))
        load.refs += 1
        load.stats.request_in(now, False)
        return load

    def request_out(self, load: RevisionLoad) -> None:
        load.stats.request_out(self._clock.now(), False)
        load.refs -= 1

    def report(self) -> list[RevisionStat]:
        """Close the window for every tracked revision; forget those idle for the whole window."""
        now = self._clock.now()
        stamp = time.time_ns()
        stats: list[RevisionStat] = []
        idle: list[RevisionKey] = []
        for key, load in self._loads.items():
            window = load.stats.report(now)
            first, load.first = load.first, 0.0
            if window.average_concurrency == 0 and load.refs == 0:
                idle.append(key)
            stat = Stat(
                pod_name=self._pod_name,
                average_concurrent_requests=max(window.average_concurrency - first, 0.0),
                request_count=max(window.request_count - first, 0.0),
                timestamp=stamp,
            )
            stats.append(RevisionStat(key.namespace, key.name, stat))
        for key in idle:
            del self._loads[key]
        return stats

    async def run(self, period: float = REPORT_PERIOD) -> None:
        """Send a report every `period` seconds, forever."""
        while True:
            await asyncio.sleep(period)
            stats = self.report()
            if stats:
                self._send(encode_wire(stats))


class AutoscalerLink:
    """A websocket to the autoscaler's stat server that reconnects forever with capped backoff.

    `send` never blocks: while the link is down, messages are dropped (the next report carries current
    load). `connected` feeds the activator's readiness.
    """

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        backoff_start: float = BACKOFF_START,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self._url = url
        self._session = session
        self._backoff_start = backoff_start
        self._backoff_max = backoff_max
        self._pending: asyncio.Queue[bytes] = asyncio.Queue(MAX_PENDING)
        self._connected = False
        self.dropped = 0

    @property
    def connected(self) -> bool:
        return self._connected

    def send(self, data: bytes) -> None:
        if not self._connected:
            self.dropped += 1
            return
        try:
            self._pending.put_nowait(data)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        backoff = self._backoff_start
        while True:
            try:
                async with self._session.ws_connect(self._url, heartbeat=10.0) as ws:
                    log.info("connected to the autoscaler at %s", self._url)
                    backoff = self._backoff_start
                    self._connected = True
                    await self._pump(ws)
                log.warning("autoscaler closed the stat connection")
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.warning("autoscaler stat connection failed (%s); retrying in %.1fs", exc, backoff)
            finally:
                self._connected = False
                self._drain_pending()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._backoff_max)

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Send queued messages until the peer closes or a send fails; reading is what notices a close."""
        reader = asyncio.create_task(self._read_until_closed(ws))
        writer = asyncio.create_task(self._write(ws))
        try:
            done, _ = await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            writer.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def _write(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            await ws.send_bytes(await self._pending.get())

    @staticmethod
    async def _read_until_closed(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for _ in ws:
            pass

    def _drain_pending(self) -> None:
        while not self._pending.empty():
            self._pending.get_nowait()
            self.dropped += 1
