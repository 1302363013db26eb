"""The autoscaler's HTTP face: the activators' stat websocket at `/`, `/healthz`, and `/metrics`.

Activators push binary `WireStatMessages`; each stat goes to the sink (the multiscaler) as it arrives. A bad
message is logged and dropped, never fatal to the connection or the process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from serving import header
from serving.stat import DecodeError, RevisionStat, decode_wire

log = logging.getLogger(__name__)


class StatSink(Protocol):
    """Receives the activators' stats."""

    def record_activator(self, stats: list[RevisionStat]) -> None: ...


class StatServer:
    __slots__ = ("_accepting", "_registry", "_sink", "connections", "dropped")

    def __init__(
        self, sink: StatSink, registry: CollectorRegistry, accepting: Callable[[], bool] = lambda: True
    ) -> None:
        self._sink = sink
        self._registry = registry
        self._accepting = accepting
        """False on a standby replica (leader election): stats belong to the leader, so a websocket that
        reaches this one is refused with 503 and the activator reconnects (through the Service, to the
        leader)."""
        self.connections = 0
        """Websockets currently open."""
        self.dropped = 0
        """Messages dropped as malformed since start."""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._root)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _root(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        if not ws.can_prepare(request).ok:
            user_agent = request.headers.get(header.USER_AGENT, "")
            if header.is_health_check(user_agent, header.KUBELET_PROBE in request.headers):
                return web.Response(text="ok")
            return web.Response(status=400, text="expected a websocket of WireStatMessages\n")
        if not self._accepting():
            return web.Response(status=503, text="this autoscaler is a standby; the leader takes stats\n")
        await ws.prepare(request)
        self.connections += 1
        peer = request.remote
        log.info("activator %s connected", peer)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    self._receive(msg.data, peer)
                elif msg.type in (WSMsgType.TEXT, WSMsgType.PING, WSMsgType.PONG):
                    self.dropped += 1
                    log.warning("dropping a non-binary message from %s", peer)
        finally:
            self.connections -= 1
            log.info("activator %s disconnected", peer)
        return ws

    def _receive(self, data: bytes, peer: str | None) -> None:
        try:
            stats = decode_wire(data)
        except DecodeError as exc:
            self.dropped += 1
            log.warning("dropping a malformed stat message from %s: %s", peer, exc)
            return
        stats = [s for s in stats if s.namespace and s.name]
        if not stats:
            return
        try:
            self._sink.record_activator(stats)
        except Exception:  # a message boundary: one bad stat must not close the activator's connection
            log.exception("failed to record stats from %s", peer)
