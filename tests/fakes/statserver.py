"""A fake autoscaler stat server: a real aiohttp websocket server that records `WireStatMessages`.

Activators connect to it as they would to the autoscaler; tests read what was pushed and can drop the
connection to check reconnection and readiness.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from serving.stat import RevisionStat, decode_wire


@dataclass(frozen=True, slots=True)
class Received:
    at: float
    """`time.monotonic()` when the message arrived."""
    stats: list[RevisionStat]


class FakeStatServer:
    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.connections = 0
        self._sockets: set[web.WebSocketResponse] = set()
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def stats(self) -> list[RevisionStat]:
        return [s for m in self.messages for s in m.stats]

    async def _accept(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        self._sockets.add(ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    received = Received(time.monotonic(), decode_wire(msg.data))
                    async with self._arrived:
                        self.messages.append(received)
                        self._arrived.notify_all()
        finally:
            self._sockets.discard(ws)
        return ws

    async def wait_for(self, predicate: Callable[[FakeStatServer], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate(self)` is true after some message arrived (or already is)."""

        async def waiting() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: predicate(self))

        await asyncio.wait_for(waiting(), timeout)

    async def drop_connections(self) -> None:
        for ws in list(self._sockets):
            await ws.close()

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_get("/", self._accept)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.url

    async def stop(self) -> None:
        await self.drop_connections()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
