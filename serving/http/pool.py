"""Pools of keep-alive connections to one upstream address each.

Idle connections are reused most-recent first and closed after `idle_expiry`; checking the age on every
take is exact, and one timer per pool closes the stale ones that nobody takes.
"""

from __future__ import annotations

import asyncio
import contextlib

from serving.http.error import UpstreamConnectError
from serving.http.upstream import UpstreamConnection


class UpstreamPool:
    """Keep-alive connections to one upstream address (one per pod / per app).

    Idle connections are reused last-in first-out, so a burst's extra connections age out while the busy
    ones stay warm; they are closed after `idle_expiry`, which should be shorter than the upstream's own
    keep-alive timeout so the engine, not the upstream, closes them (a request racing the upstream's close
    would otherwise fail).
    """

    def __init__(self, host: str, port: int, *, max_idle: int = 100, idle_expiry: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.max_idle = max_idle
        self.idle_expiry = idle_expiry
        self._idle: list[UpstreamConnection] = []  # oldest first
        self._streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        """Idle connections of HTTP/2 clients' requests translated to HTTP/1.1, oldest first."""
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"UpstreamPool({self.address}, idle={len(self._idle)})"

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def idle_stream_count(self) -> int:
        return len(self._streams)

    def take_idle(self) -> UpstreamConnection | None:
        """The most recently used idle connection that is still open and not expired, if any."""
        idle = self._idle
        if not idle:
            return None
        cutoff = idle[-1].clock() - self.idle_expiry  # the loop's clock (each connection holds it bound)
        while idle:
            conn = idle.pop()
            if conn.open and conn.idle_since > cutoff:
                return conn
            conn.close()
        return None

    async def connect(self, limit: float) -> UpstreamConnection:
        """A new connection, established within `limit` seconds."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(limit):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self, loop), self.host, self.port
                )
        except OSError as exc:  # includes TimeoutError
            raise UpstreamConnectError(f"cannot connect to {self.address}: {exc or 'timed out'}") from exc
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        if self._closed or not conn.open or len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn.reused = True
        conn.idle_since = conn.clock()
        self._idle.append(conn)
        if self._timer is None:
            self._timer = conn.loop.call_at(self._idle[0].idle_since + self.idle_expiry, self._sweep)

    def take_stream(
        self, loop: asyncio.AbstractEventLoop
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """An idle stream connection (for HTTP/2 requests to this HTTP/1.1 upstream) that is still open, has
        received nothing while idle and has not expired; most recently used first."""
        streams = self._streams
        cutoff = loop.time() - self.idle_expiry
        while streams:
            reader, writer, since = streams.pop()
            # Bytes that arrived while idle (a 408 before a close) are no answer to the next request.
            unread = getattr(reader, "_buffer", b"")  # StreamReader keeps them there; no public accessor
            if since > cutoff and not unread and not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.transport.abort()
        return None

    def release_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, loop: asyncio.AbstractEventLoop
    ) -> None:
        """Keep a stream connection whose exchange ended cleanly for the next HTTP/2 request."""
        if self._closed or len(self._streams) >= self.max_idle or writer.is_closing():
            writer.transport.abort()
            return
        self._streams.append((reader, writer, loop.time()))
        if self._timer is None:
            self._timer = loop.call_at(self._streams[0][2] + self.idle_expiry, self._sweep)

    def discard(self, conn: UpstreamConnection) -> None:
        """Forget an idle connection the upstream closed."""
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    def _sweep(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - self.idle_expiry
        idle = self._idle
        expired = 0
        while expired < len(idle) and idle[expired].idle_since <= cutoff:
            idle[expired].close()
            expired += 1
        del idle[:expired]
        streams = self._streams
        expired = 0
        while expired < len(streams) and streams[expired][2] <= cutoff:
            streams[expired][1].transport.abort()
            expired += 1
        del streams[:expired]
        oldest = [idle[0].idle_since] if idle else []
        if streams:
            oldest.append(streams[0][2])
        if oldest:
            self._timer = loop.call_at(min(oldest) + self.idle_expiry, self._sweep)

    async def close(self) -> None:
        """Close idle connections; connections in use are closed when their exchange ends."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        streams, self._streams = self._streams, []
        for _, writer, _ in streams:
            writer.transport.abort()
