"""A fleet of fake queue-proxy stats endpoints: one real aiohttp server listening on many loopback ports, each
port one pod answering `GET /metrics` with a protobuf `Stat`.

Tests set each pod's stat or misbehaviour (stall, HTTP error, wrong content type) and read how often each pod
was scraped. One process can stand for a thousand pods, which the scrape benchmark relies on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from aiohttp import web

from serving.platform import Pod
from serving.stat import PROTOBUF_CONTENT_TYPE, Stat, encode_stat

Behaviour = Literal["ok", "stall", "error", "text"]


@dataclass
class FakeStatPod:
    name: str
    port: int
    stat: Stat
    behaviour: Behaviour = "ok"
    hits: int = 0
    started_at: float = field(default_factory=time.time)

    def pod(self, *, ready: bool = True) -> Pod:
        return Pod(
            name=self.name,
            host="127.0.0.1",
            port=self.port,
            stats_port=self.port,
            admin_port=self.port,
            ready=ready,
            started_at=self.started_at,
        )


class FakeStatFleet:
    def __init__(self) -> None:
        self.pods: dict[int, FakeStatPod] = {}
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        pod = self.pods[sockname[1]] if sockname else None
        if pod is None:
            return web.Response(status=404)
        pod.hits += 1
        if pod.behaviour == "stall":
            await self._release.wait()
        if pod.behaviour == "error":
            return web.Response(status=500, text="broken")
        if pod.behaviour == "text":
            return web.Response(text="not a stat")
        return web.Response(body=encode_stat(pod.stat), headers={"Content-Type": PROTOBUF_CONTENT_TYPE})

    async def start(self, count: int, *, concurrency: float = 1.0, prefix: str = "pod") -> list[FakeStatPod]:
        """Listen for `count` pods, each reporting `concurrency` (and as many requests per second)."""
        if self._runner is None:
            app = web.Application()
            app.router.add_get("/metrics", self._metrics)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
            await self._runner.setup()
        started = []
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            await web.SockSite(self._runner, sock, backlog=1024).start()
            name = f"{prefix}-{len(self.pods)}"
            stat = Stat(pod_name=name, average_concurrent_requests=concurrency, request_count=concurrency)
            self.pods[port] = FakeStatPod(name, port, stat)
            started.append(self.pods[port])
        return started

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()


class _LeanStatProtocol(asyncio.Protocol):
    """Answers every `GET` on the connection with one fixed response; for load benchmarks, where an HTTP
    framework's own cost would be measured instead of the scraper's."""

    def __init__(self, response: bytes) -> None:
        self._response = response
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n\r\n" in self._buffer:
            _, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
            assert self._transport is not None
            self._transport.write(self._response)


def lean_response(stat: Stat) -> bytes:
    body = encode_stat(stat)
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {PROTOBUF_CONTENT_TYPE}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _serve(pods: int, concurrency: float, lean: bool) -> None:
    if not lean:
        fleet = FakeStatFleet()
        started = await fleet.start(pods, concurrency=concurrency)
        print(json.dumps([{"name": p.name, "port": p.port} for p in started]), flush=True)
        try:
            await asyncio.Event().wait()  # until killed
        finally:
            await fleet.stop()
        return
    loop = asyncio.get_running_loop()
    listed = []
    for i in range(pods):
        name = f"pod-{i}"
        response = lean_response(Stat(pod_name=name, average_concurrent_requests=concurrency))
        server = await loop.create_server(partial(_LeanStatProtocol, response), "127.0.0.1", 0, backlog=1024)
        listed.append({"name": name, "port": server.sockets[0].getsockname()[1]})
    print(json.dumps(listed), flush=True)
    await asyncio.Event().wait()  # until killed


def main() -> None:
    """Run a fleet as a process (benchmarks): prints `[{"name", "port"}...]` on one line, then serves until
    killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--concurrency", type=float, default=1.0)
    parser.add_argument("--lean", action="store_true", help="raw protocol answering a fixed response")
    args = parser.parse_args()
    import uvloop

    uvloop.run(_serve(args.pods, args.concurrency, args.lean))


if __name__ == "__main__":
    main()
