"""HTTP/2 connections to an upstream (an h2c app, or a queue-proxy of an h2c revision), multiplexed.

An `H2UpstreamPool` keeps a few connections to one address and opens a stream per forwarded request on the
first connection with room (the peer's MAX_CONCURRENT_STREAMS); a connection that got GOAWAY takes no new
streams and closes when its last one ends; an idle one closes after `idle_expiry`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, cast

import h2.errors
import h2.events
import h2.exceptions

from serving.http.error import UpstreamConnectError
from serving.http.h2base import H2Transport, Inbound, StreamReset
from serving.http.upstream import ForwardTimeouts

if TYPE_CHECKING:
    from serving.http.exchange import Exchange
    from serving.http.message import Headers

logger = logging.getLogger(__name__)

_DEFAULT_TIMEOUTS: Final = ForwardTimeouts()

MAX_HEADER_LIST: Final = 256 * 1024
"""Largest response head accepted from an upstream (as the HTTP/1.1 engine's 256 KiB)."""


class UpstreamStream:
    """One request stream on an upstream connection: the response head, its body and trailers."""

    __slots__ = ("body", "conn", "head", "stream_id")

    def __init__(self, conn: H2UpstreamConnection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.head: asyncio.Future[list[tuple[bytes, bytes]]] = conn.loop.create_future()
        self.body = Inbound(lambda size: conn.h2.ack(stream_id, size))

    def fail(self, error: StreamReset) -> None:
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: a caller that already left must not log it as lost
        self.body.fail(error)

    async def send(self, data: bytes, *, end_stream: bool = False) -> None:
        await self.conn.h2.send_data(self.stream_id, data, end_stream=end_stream)

    def reset(self) -> None:
        self.body.drop()
        self.conn.h2.reset(self.stream_id, h2.errors.ErrorCodes.CANCEL)
        self.conn.stream_done(self.stream_id)


class H2UpstreamConnection(asyncio.Protocol):
    """A client-side HTTP/2 connection to the upstream."""

    def __init__(self, pool: H2UpstreamPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.h2 = H2Transport(client_side=True, max_header_list_size=MAX_HEADER_LIST)
        self._streams: dict[int, UpstreamStream] = {}
        self.goaway = False
        self.open = False
        self.idle_since = loop.time()
        self._transport: asyncio.Transport | None = None
        self.settled: asyncio.Future[None] = loop.create_future()
        """Resolved by the upstream's first SETTINGS: until then its stream limit is unknown (`h2` would
        assume none), so no stream is opened before."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        self.open = True
        self.h2.start(self._transport)

    @property
    def streams(self) -> int:
        return len(self._streams)

    def has_room(self) -> bool:
        if not self.open or self.goaway or self.h2.closed:
            return False
        limit = self.h2.h2.remote_settings.max_concurrent_streams
        return len(self._streams) < limit

    def open_stream(self, fields: list[tuple[bytes, bytes]], *, end_stream: bool) -> UpstreamStream:
        stream_id = self.h2.h2.get_next_available_stream_id()
        stream = UpstreamStream(self, stream_id)
        self._streams[stream_id] = stream
        try:
            self.h2.send_headers(stream_id, fields, end_stream=end_stream)
        except StreamReset:
            self._streams.pop(stream_id, None)
            raise
        return stream

    def stream_done(self, stream_id: int) -> None:
        if self._streams.pop(stream_id, None) is not None and not self._streams:
            self.idle_since = self.loop.time()
            if self.goaway:
                self.close()
            else:
                self.pool.idle(self)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            logger.warning("HTTP/2 protocol error from upstream %s: %s", self.pool.address, exc)
            self.h2.flush()
            self._fail_all(StreamReset(f"upstream protocol error: {exc}"))
            self.close()
            return
        for event in events:
            self._event(event)
        self.h2.flush()

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None and not stream.head.done():
                stream.head.set_result(list(event.headers))
        elif isinstance(event, h2.events.DataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is None:
                self.h2.ack(event.stream_id, event.flow_controlled_length)
            else:
                stream.body.feed(event.data, event.flow_controlled_length)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.body.end(list(event.headers))
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.body.end()
        elif isinstance(event, h2.events.StreamReset):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                refused = event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                stream.fail(
                    StreamReset(
                        f"upstream reset the stream ({event.error_code!r})",
                        code=event.error_code,
                        refused=refused,
                    )
                )
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            if not self.settled.done():
                self.settled.set_result(None)
            self.h2.wake()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = True
            self.h2.keep_streams()
            last = event.last_stream_id if event.last_stream_id is not None else 0
            for stream_id, stream in list(self._streams.items()):
                if stream_id > last:
                    # Never processed by the upstream: safe to send elsewhere.
                    stream.fail(StreamReset("upstream sent GOAWAY", refused=True))
            if not self._streams:
                self.close()

    def pause_writing(self) -> None:
        self.h2.pause_writing()

    def resume_writing(self) -> None:
        self.h2.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.settled.done():
            self.settled.set_exception(ConnectionError(f"closed before its SETTINGS: {exc}"))
            self.settled.exception()
        self.h2.lost()
        self.pool.forget(self)
        self._fail_all(StreamReset(f"upstream connection closed{f': {exc}' if exc else ''}"))

    def _fail_all(self, error: StreamReset) -> None:
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream.fail(error)

    def close(self) -> None:
        self.open = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


class H2UpstreamPool:
    """HTTP/2 connections to one upstream address; a stream per request on the first one with room."""

    http2 = True

    def __init__(self, host: str, port: int, *, idle_expiry: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.idle_expiry = idle_expiry
        self._conns: list[H2UpstreamConnection] = []
        self._connecting: asyncio.Future[H2UpstreamConnection] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"H2UpstreamPool({self.address}, connections={len(self._conns)})"

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def acquire(self, limit: float) -> H2UpstreamConnection:
        """A connection with room for one more stream; a new one (established within `limit` seconds) when
        none has room. Concurrent callers share one connection attempt."""
        while True:
            for conn in self._conns:
                if conn.has_room():
                    return conn
            pending = self._connecting
            if pending is None:
                pending = self._connecting = asyncio.get_running_loop().create_future()
                try:
                    conn = await self._connect(limit)
                except BaseException as exc:
                    if isinstance(exc, Exception):
                        pending.set_exception(exc)
                        pending.exception()
                    else:
                        pending.cancel()
                    raise
                finally:
                    self._connecting = None
                if not pending.done():
                    pending.set_result(conn)
                return conn
            try:
                await asyncio.shield(pending)
            except asyncio.CancelledError:
                if pending.cancelled():
                    continue  # the connecting caller left; try again
                raise

    async def _connect(self, limit: float) -> H2UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(limit):
                _, conn = await loop.create_connection(
                    lambda: H2UpstreamConnection(self, loop), self.host, self.port
                )
                try:
                    await conn.settled
                except BaseException:
                    conn.close()
                    raise
        except OSError as exc:  # includes TimeoutError
            raise UpstreamConnectError(f"cannot connect to {self.address}: {exc or 'timed out'}") from exc
        if self._closed:
            conn.close()
            raise UpstreamConnectError(f"the pool for {self.address} is closed")
        self._conns.append(conn)
        return conn

    def idle(self, conn: H2UpstreamConnection) -> None:
        """A connection has no stream left: close it after `idle_expiry` unless a stream comes first."""
        if self._timer is None and not self._closed:
            self._timer = conn.loop.call_later(self.idle_expiry, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        if not self._conns:
            return
        loop = self._conns[0].loop
        cutoff = loop.time() - self.idle_expiry
        for conn in list(self._conns):
            if not conn.streams and conn.idle_since <= cutoff:
                self.forget(conn)
                conn.close()
        if any(not conn.streams for conn in self._conns):
            self._timer = loop.call_later(self.idle_expiry, self._sweep)

    def forget(self, conn: H2UpstreamConnection) -> None:
        with contextlib.suppress(ValueError):
            self._conns.remove(conn)

    async def close(self) -> None:
        """Close idle connections; those with streams close when their last stream ends."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for conn in list(self._conns):
            conn.goaway = True
            if not conn.streams:
                self.forget(conn)
                conn.close()

    async def forward_http1(
        self,
        exchange: Exchange,
        headers: Headers,
        *,
        timeouts: ForwardTimeouts = _DEFAULT_TIMEOUTS,
        response_headers: Iterable[tuple[str, str]] = (),
        retry_refused: bool = False,
    ) -> int:
        """An HTTP/1.1 client's request to this HTTP/2 upstream (`Exchange.forward` comes here)."""
        from serving.http import h2forward  # h2forward imports this module

        return await h2forward.forward_h1_to_h2(
            exchange,
            self,
            headers,
            timeouts=timeouts,
            response_headers=response_headers,
            retry_refused=retry_refused,
        )
