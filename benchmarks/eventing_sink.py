"""The event sink of benchmarks/eventing.py: a Service that counts every POST it receives and how long each
took from its producer (now minus the `ce-sentat` header, ns since the epoch), at as little CPU per event as
an asyncio server can spend, so that it is never what limits the figures.

It is an asyncio protocol with the httptools parser under uvloop (no task and no framework per request).
`GET /stats` answers the count and latency percentiles (nearest rank) since the last reset as JSON;
`GET /stats?reset=1` answers them and starts counting afresh, in one step. Any other GET answers 200 (the
queue-proxy's readiness probe). Run as `python benchmarks/eventing_sink.py` with `PORT` set (the platform
sets it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from array import array
from typing import Final, cast

import httptools
import uvloop

ACCEPTED: Final = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
OK: Final = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
SENT_AT: Final = b"ce-sentat"
MAX_SAMPLES: Final = 5_000_000
"""Latencies kept between two resets (40 MB): far more than 100 s at 10,000 events/s; later ones are only
counted."""


class Stats:
    """Events received and their latencies (ns) since the last reset; one event loop touches it."""

    def __init__(self) -> None:
        self.count = 0
        self.since_ns = time.time_ns()
        self.latencies = array("q")
        self.missing = 0
        """Events without a usable `ce-sentat`: counted, not timed."""

    def record(self, sent_at: bytes | None) -> None:
        now = time.time_ns()
        self.count += 1
        if sent_at is None or not sent_at.isdigit():
            self.missing += 1
            return
        if len(self.latencies) < MAX_SAMPLES:
            self.latencies.append(now - int(sent_at))

    def snapshot(self, *, reset: bool) -> dict[str, object]:
        latencies = sorted(self.latencies)
        now = time.time_ns()

        def rank(p: float) -> float | None:
            if not latencies:
                return None
            index = max(0, min(len(latencies) - 1, -(-len(latencies) * p // 100) - 1))
            return latencies[int(index)] / 1e6

        doc: dict[str, object] = {
            "count": self.count,
            "seconds": (now - self.since_ns) / 1e9,
            "timed": len(latencies),
            "missing": self.missing,
            "p50_ms": rank(50),
            "p99_ms": rank(99),
            "max_ms": latencies[-1] / 1e6 if latencies else None,
        }
        if reset:
            self.__init__()  # type: ignore[misc]  # a fresh start, in place: handlers hold this object
        return doc


class SinkProtocol(asyncio.Protocol):
    """One client connection: HTTP/1.1 keep-alive, requests answered in order as each completes."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._sent_at: bytes | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._sent_at = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == SENT_AT:
            self._sent_at = value

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None:
            return
        if self._parser.get_method() == b"POST":
            self._stats.record(self._sent_at)
            transport.write(ACCEPTED)
        elif self._url.startswith(b"/stats"):
            body = json.dumps(self._stats.snapshot(reset=b"reset=1" in self._url)).encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            transport.write(head.encode() + body)
        else:
            transport.write(OK)
        if not self._parser.should_keep_alive():
            transport.close()


async def serve(port: int) -> None:
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(stats), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> int:
    port = int(os.environ.get("PORT", "8080"))
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
