"""A fake revision pod: a real aiohttp server that answers like a queue-proxy in front of an app.

It answers the activator's probe (`K-Network-Probe: queue` -> 200 `queue` once ready), records every other
request with its headers, tracks concurrency, and can hold requests until released. Tests that need the real
queue-proxy use `serving queue-proxy` processes instead.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiohttp import web

from serving import header
from serving.platform import Pod


@dataclass(frozen=True, slots=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    """`time.monotonic()` when the request arrived."""


class FakePod:
    def __init__(self, name: str = "pod", *, ready: bool = True) -> None:
        self.name = name
        self.ready = ready
        self.requests: list[Recorded] = []
        self.probes = 0
        self.first_probe_passed_at: float | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate: asyncio.Event | None = None
        """While set to an unset Event, requests wait for it before answering."""
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get(header.NETWORK_PROBE) == header.PROBE_QUEUE:
            self.probes += 1
            if not self.ready:
                return web.Response(status=503, text="not ready")
            if self.first_probe_passed_at is None:
                self.first_probe_passed_at = time.monotonic()
            return web.Response(text=header.PROBE_QUEUE)
        body = await request.read()
        self.requests.append(
            Recorded(
                request.method,
                request.path_qs,
                {k.lower(): v for k, v in request.headers.items()},
                body,
                time.monotonic(),
            )
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            delay = float(request.query.get("sleep_ms", "0")) / 1000
            if delay:
                await asyncio.sleep(delay)
            return web.Response(text=f"{self.name} {request.method} {request.path_qs} {len(body)}\n")
        finally:
            self.in_flight -= 1

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def pod(self, *, ready: bool | None = None) -> Pod:
        """How the platform lists this pod (`ready` defaults to the pod's own state)."""
        return Pod(
            name=self.name,
            host="127.0.0.1",
            port=self.port,
            stats_port=self.port,
            admin_port=self.port,
            ready=self.ready if ready is None else ready,
            started_at=time.time(),
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
