"""One keep-alive HTTP/1.1 client connection of the load generator: an asyncio protocol that writes a
request's pre-encoded bytes and parses the response with httptools (no task per request)."""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import Final, Protocol, cast

import httptools

from bench.load.sample import PROTOCOL, RESET, parse_server_timing
from bench.load.schedule import Target

REVISION_HEADER: Final = b"x-bench-revision"
"""Response header the benchmark app sets to the revision (or version) that answered."""


class Pool(Protocol):
    """What a connection needs from the generator that owns it: it reports an answer, a failure, a request to
    send again on a fresh connection, or that it is idle again or gone."""

    @property
    def resend_after_idle(self) -> float:
        """Seconds a keep-alive connection must have been idle for a lost request to be sent again."""

    def complete(self, pending: Pending, error: str | None) -> None:
        """The request ended: answered (`error` None) or failed with an error kind."""

    def resend(self, pending: Pending) -> None:
        """Send the request again on a fresh connection (the server closed this idle one as it went out)."""

    def release(self, conn: Connection) -> None:
        """The connection is idle and may carry the next request to its host and port."""

    def forget(self, conn: Connection) -> None:
        """The connection is closed: drop it from every pool."""


class Pending:
    """One request in flight: what was sent, when, and what has come back of its response so far."""

    __slots__ = ("activator_ms", "conn", "nbytes", "revision", "scheduled", "sent", "status", "target")

    def __init__(self, target: Target, scheduled: float, sent: float) -> None:
        self.target = target
        self.scheduled = scheduled
        self.sent = sent
        self.conn: Connection | None = None
        self.status = 0
        self.activator_ms: float | None = None
        self.revision: str | None = None
        self.nbytes = 0


class Connection(asyncio.Protocol):
    """One keep-alive client connection carrying one request at a time."""

    def __init__(self, pool: Pool, key: tuple[str, int]) -> None:
        self._pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.pending: Pending | None = None
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
            self.fail(PROTOCOL)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._pool.forget(self)
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        if exc is None and pending.status and not self._framed:
            self._pool.complete(pending, None)  # a body delimited by the end of the connection (HTTP/1.0)
        elif self._served and not self._answered and self._idle_before_send >= self._pool.resend_after_idle:
            # The server closed an idle keep-alive connection as the request went out: nothing reached
            # the app, so send it again on a fresh connection (what HTTP clients do), same schedule.
            self._pool.resend(pending)
        else:
            self._pool.complete(pending, RESET)

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
        self._pool.complete(pending, None)
        if self._keep_alive and self.transport is not None and not self.transport.is_closing():
            self._pool.release(self)
        else:
            self.close()

    # driven by the generator
    def send(self, pending: Pending) -> None:
        assert self.transport is not None
        self.pending = pending
        self._answered = False
        self._framed = False
        self._idle_before_send = monotonic() - self.idle_since
        pending.conn = self
        self.transport.write(pending.target.wire)

    def fail(self, kind: str) -> None:
        pending = self.pending
        self.pending = None
        if pending is not None:
            self._pool.complete(pending, kind)
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        self._pool.forget(self)
