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
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"UpstreamPool({self.address}, idle={len(self._idle)})"

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def take_idle(self, loop: asyncio.AbstractEventLoop) -> UpstreamConnection | None:
        """The most recently used idle connection that is still open and not expired, if any."""
        idle = self._idle
        if not idle:
            return None
        cutoff = loop.time() - self.idle_expiry
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
        conn.idle_since = conn.loop.time()
        self._idle.append(conn)
        if self._timer is None:
            self._timer = conn.loop.call_at(self._idle[0].idle_since + self.idle_expiry, self._sweep)

    def discard(self, conn: UpstreamConnection) -> None:
        """Forget an idle connection the upstream closed."""
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    def _sweep(self) -> None:
        self._timer = None
        idle = self._idle
        if not idle:
            return
        loop = idle[0].loop
        cutoff = loop.time() - self.idle_expiry
        expired = 0
        while expired < len(idle) and idle[expired].idle_since <= cutoff:
            idle[expired].close()
            expired += 1
        del idle[:expired]
        if idle:
            self._timer = loop.call_at(idle[0].idle_since + self.idle_expiry, self._sweep)

    async def close(self) -> None:
        """Close idle connections; connections in use are closed when their exchange ends."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
