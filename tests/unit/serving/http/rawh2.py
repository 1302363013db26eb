"""Raw-socket HTTP/2 tools for testing the engine: an h2c client, a scriptable h2c upstream, and a frame-level
client that writes hand-made (or malformed) frames and reads back every frame the server sends.

The client and the upstream are the `h2` state machine on asyncio streams, with a flow control of their own
that a test can hold back per stream (a reader that never reads), so the tests see what a real peer would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from serving.http.h2base import PREFACE

WAIT = 10.0  # generous: the machine may be loaded

Fields = list[tuple[bytes, bytes]]


class StreamGone(Exception):
    """The stream (or the whole connection) ended before what was asked could be sent."""


@dataclass
class Stream:
    """What one side of a stream has received so far."""

    id: int
    headers: Fields | None = None
    data: bytearray = field(default_factory=bytearray)
    received: int = 0
    trailers: Fields | None = None
    ended: bool = False
    reset_code: int | None = None
    hold: bool = False
    """Never return this stream's window (a reader that never reads): only the connection's is returned."""
    keep: bool = True
    """Keep the received body (off for bodies too big to hold)."""

    @property
    def done(self) -> bool:
        return self.ended or self.reset_code is not None

    @property
    def status(self) -> int:
        value = self.header(":status")
        assert value is not None, self.headers
        return int(value)

    def header(self, name: str) -> str | None:
        for key, value in self.headers or ():
            if key == name.encode():
                return value.decode("latin-1")
        return None

    def trailer(self, name: str) -> str | None:
        for key, value in self.trailers or ():
            if key == name.encode():
                return value.decode("latin-1")
        return None


OnRequest = Callable[["H2Peer", Stream], Coroutine[Any, Any, None]]


class H2Peer:
    """One HTTP/2 connection, client or server side, read by a task of its own."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        client: bool,
        on_request: OnRequest | None = None,
        settings: dict[h2.settings.SettingCodes, int] | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        config = h2.config.H2Configuration(client_side=client, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        if settings:
            self.conn.local_settings = h2.settings.Settings(client=client, initial_values=settings)
        self.client = client
        self.streams: dict[int, Stream] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.protocol_error: h2.exceptions.ProtocolError | None = None
        self.closed = False
        self._on_request = on_request
        self._handlers: set[asyncio.Task[None]] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, port: int, *, split: bool = False) -> H2Peer:
        """A prior-knowledge h2c client connection; `split` writes the preface a byte at a time."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = cls(reader, writer, client=True)
        peer.conn.initiate_connection()
        data = peer.conn.data_to_send()
        assert data.startswith(PREFACE)
        if split:
            for i in range(len(PREFACE)):
                writer.write(data[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0.002)  # each byte its own segment, and its own read on the server
            data = data[len(PREFACE) :]
        writer.write(data)
        peer._task = asyncio.get_running_loop().create_task(peer._read_loop())
        return peer

    @classmethod
    async def upgrade(
        cls, port: int, path: str = "/", *, host: str = "app", eager: bool = False
    ) -> tuple[H2Peer, bytes]:
        """An HTTP/1.1 connection switched with `Upgrade: h2c`: the GET of `path` becomes stream 1. Returns
        the peer and the 101 head. `eager` sends the preface with the request rather than after the 101."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return await cls.upgrade_streams(reader, writer, path, host=host, eager=eager)

    @classmethod
    async def upgrade_streams(
        cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, *, host: str, eager: bool
    ) -> tuple[H2Peer, bytes]:
        """`upgrade` on a connection already open (an HTTP/1.1 connection kept alive)."""
        peer = cls(reader, writer, client=True)
        settings = peer.conn.initiate_upgrade_connection()
        assert settings is not None
        preamble = peer.conn.data_to_send()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            f"Upgrade: h2c\r\nHTTP2-Settings: {settings.decode()}\r\n\r\n".encode()
            + (preamble if eager else b"")
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        if not eager:
            writer.write(preamble)
        peer._stream(1)  # the upgraded request
        peer._task = asyncio.get_running_loop().create_task(peer._read_loop())
        return peer, head

    def serve(self) -> None:
        """Start as the server side of an accepted connection."""
        self.conn.initiate_connection()
        self.flush()
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    # -- the connection ------------------------------------------------------------------------------------

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed and not self.writer.transport.is_closing():
            self.writer.write(data)

    async def _read_loop(self) -> None:
        try:
            while True:
                try:
                    data = await self.reader.read(65536)
                except ConnectionError:
                    break
                if not data:
                    break
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    self.protocol_error = exc
                    self.flush()
                    break
                for event in events:
                    self._event(event)
                self.flush()
                self._notify()
        finally:
            self.closed = True
            self._notify()

    def _stream(self, stream_id: int) -> Stream:
        stream = self.streams.get(stream_id)
        if stream is None:
            stream = self.streams[stream_id] = Stream(stream_id)
        return stream

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, (h2.events.ResponseReceived, h2.events.RequestReceived)):
            assert event.stream_id is not None
            stream = self._stream(event.stream_id)
            stream.headers = list(event.headers or ())
            if isinstance(event, h2.events.RequestReceived) and self._on_request is not None:
                task = asyncio.get_running_loop().create_task(self._on_request(self, stream))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None
            assert event.data is not None
            stream = self._stream(event.stream_id)
            flow = event.flow_controlled_length or 0
            stream.received += len(event.data)
            if stream.keep:
                stream.data += event.data
            if stream.hold:
                if flow:
                    self.conn.increment_flow_control_window(flow)
            else:
                self.conn.acknowledge_received_data(flow, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            assert event.stream_id is not None
            self._stream(event.stream_id).trailers = list(event.headers or ())
        elif isinstance(event, h2.events.StreamEnded):
            assert event.stream_id is not None
            self._stream(event.stream_id).ended = True
        elif isinstance(event, h2.events.StreamReset):
            assert event.stream_id is not None
            stream = self._stream(event.stream_id)
            stream.reset_code = int(event.error_code or 0)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
            # Like every real client: the streams below the last stream id go on (RFC 9113 section 6.8), which
            # `h2` alone refuses after a GOAWAY.
            self.conn.state_machine.state = (
                h2.connection.ConnectionState.CLIENT_OPEN
                if self.client
                else h2.connection.ConnectionState.SERVER_OPEN
            )

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None = WAIT) -> None:
        """Wait until `predicate` holds (checked after each batch of frames received)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter

    async def wait_closed(self, timeout: float = WAIT) -> None:
        await self.wait_for(lambda: self.closed, timeout)

    async def close(self) -> None:
        for task in list(self._handlers):
            task.cancel()
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)

    def abort(self) -> None:
        self.writer.transport.abort()

    # -- streams -------------------------------------------------------------------------------------------

    def request(
        self,
        path: str = "/",
        *,
        method: str = "GET",
        authority: str = "app",
        extra: Iterable[tuple[str, str]] = (),
        end: bool = True,
    ) -> int:
        """Open a request stream (ended at once when `end`); return its id."""
        fields: Fields = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        fields += [(n.encode(), v.encode()) for n, v in extra]
        return self.send_request(fields, end=end)

    def send_request(self, fields: Fields, *, end: bool = True) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self._stream(stream_id)
        self.conn.send_headers(stream_id, fields, end_stream=end)
        self.flush()
        return stream_id

    async def send_data(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        """Send `data` as the peer's windows allow; raises `StreamGone` if the stream or connection ends."""
        view = memoryview(data)
        conn = self.conn
        while True:
            try:
                if not view:
                    if end:
                        conn.end_stream(stream_id)
                        self.flush()
                    return
                window = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
                if window > 0:
                    piece, view = view[:window], view[window:]
                    conn.send_data(stream_id, piece.tobytes(), end_stream=end and not view)
                    self.flush()
                    await self.writer.drain()
                    if not view:
                        return
                    continue
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as exc:
                raise StreamGone(str(exc)) from None
            except ConnectionError as exc:
                raise StreamGone(str(exc)) from None
            if self.closed:
                raise StreamGone("the connection closed")
            await self.wait_for(lambda: self._can_send(stream_id))

    def _can_send(self, stream_id: int) -> bool:
        """Window opened, or there is an end to report (the stream or the connection is gone)."""
        if self.closed:
            return True
        try:
            return self.conn.local_flow_control_window(stream_id) > 0
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return True

    def send_headers(self, stream_id: int, fields: Fields, *, end: bool = False) -> None:
        self.conn.send_headers(stream_id, fields, end_stream=end)
        self.flush()

    def reset(self, stream_id: int, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        self.conn.reset_stream(stream_id, code)
        self.flush()

    def release(self, stream_id: int) -> None:
        """A held stream's reader starts reading: its window is returned from now on."""
        stream = self.streams[stream_id]
        stream.hold = False
        self.conn.acknowledge_received_data(0, stream_id)

    async def response(self, stream_id: int, timeout: float = WAIT) -> Stream:
        """Wait until the stream has ended or been reset (or the connection closed); return it."""
        stream = self.streams[stream_id]
        await self.wait_for(lambda: stream.done or self.closed, timeout)
        return stream

    async def fetch(
        self,
        path: str = "/",
        *,
        method: str = "GET",
        body: bytes = b"",
        extra: Iterable[tuple[str, str]] = (),
        timeout: float = WAIT,
    ) -> Stream:
        stream_id = self.request(path, method=method, extra=extra, end=not body)
        if body:
            await self.send_data(stream_id, body, end=True)
        return await self.response(stream_id, timeout)

    async def body(self, stream_id: int, timeout: float = WAIT) -> bytes:
        """(Server side) the whole request body of a stream."""
        stream = self.streams[stream_id]
        await self.wait_for(lambda: stream.done or self.closed, timeout)
        if not stream.ended:
            raise StreamGone("the request stream was reset")
        return bytes(stream.data)

    async def respond(
        self,
        stream_id: int,
        status: int = 200,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        trailers: Fields | None = None,
    ) -> None:
        """(Server side) a whole response."""
        fields: Fields = [(b":status", str(status).encode())]
        fields += [(n.encode(), v.encode()) for n, v in headers]
        bodyless = not body and trailers is None
        self.send_headers(stream_id, fields, end=bodyless)
        if body:
            await self.send_data(stream_id, body, end=trailers is None)
        if trailers is not None:
            self.send_headers(stream_id, trailers, end=True)

    def send_goaway(self, last_stream_id: int, code: int = h2.errors.ErrorCodes.NO_ERROR) -> None:
        """GOAWAY written beside `h2` (which would stop every stream): the open streams stay usable."""
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = code
        self.flush()
        self.writer.write(frame.serialize())


# -- a scriptable upstream ---------------------------------------------------------------------------------


@dataclass
class H2Upstream:
    """An h2c upstream whose `on_request` answers each stream; it records its connections."""

    port: int = 0
    peers: list[H2Peer] = field(default_factory=list)


@contextlib.asynccontextmanager
async def h2_upstream(
    on_request: OnRequest,
    *,
    settings: dict[h2.settings.SettingCodes, int] | None = None,
    preface_delay: float = 0.0,
) -> AsyncIterator[H2Upstream]:
    """`settings` are the upstream's own (advertised in its preface, `preface_delay` seconds after it
    accepts a connection: the time a busy app process takes to get to a new connection)."""
    upstream = H2Upstream()
    tasks: set[asyncio.Task[None]] = set()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        peer = H2Peer(reader, writer, client=False, on_request=on_request, settings=settings)
        upstream.peers.append(peer)
        if preface_delay:
            await asyncio.sleep(preface_delay)
        peer.serve()
        try:
            await peer.wait_for(lambda: peer.closed, timeout=None)
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    try:
        yield upstream
    finally:
        server.close()
        for peer in upstream.peers:
            peer.abort()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT)
        for peer in upstream.peers:
            await peer.close()


# -- hand-made frames --------------------------------------------------------------------------------------


def request_block(
    path: str | None = "/", authority: str | None = "app", *, extra: Iterable[tuple[str, str]] = ()
) -> bytes:
    """An HPACK block of a GET request (a pseudo-header left out when None), from a fresh encoder."""
    fields = [(":method", "GET"), (":scheme", "http")]
    if authority is not None:
        fields.append((":authority", authority))
    if path is not None:
        fields.append((":path", path))
    fields += list(extra)
    return bytes(hpack.Encoder().encode(fields))


def headers_frame(
    stream_id: int, block: bytes, *, end_stream: bool = True, end_headers: bool = True
) -> bytes:
    frame = HeadersFrame(stream_id)
    frame.data = block
    if end_stream:
        frame.flags.add("END_STREAM")
    if end_headers:
        frame.flags.add("END_HEADERS")
    return bytes(frame.serialize())


def continuation_frame(stream_id: int, block: bytes, *, end_headers: bool = False) -> bytes:
    frame = ContinuationFrame(stream_id)
    frame.data = block
    if end_headers:
        frame.flags.add("END_HEADERS")
    return bytes(frame.serialize())


CLIENT_START = PREFACE + bytes(SettingsFrame(0).serialize())
"""What a client sends first: the preface and an empty SETTINGS."""


class FrameClient(asyncio.Protocol):
    """A client that writes exactly the bytes a test gives it and parses every frame the server sends.

    Frames are parsed as they arrive (not when a test reads), so a GOAWAY followed at once by a reset of the
    connection (the server closing with unread bytes) is still seen.
    """

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.fields: dict[int, list[Fields]] = {}
        """The decoded header blocks the server sent, per stream (HPACK state is the connection's)."""
        self.eof = False
        self.transport: asyncio.Transport | None = None
        self._decoder = hpack.Decoder()
        self._buffer = bytearray()
        self._waiters: list[asyncio.Future[None]] = []
        self._paused: asyncio.Future[None] | None = None

    @classmethod
    async def connect(cls, port: int, *, start: bool = True) -> FrameClient:
        _, client = await asyncio.get_running_loop().create_connection(cls, "127.0.0.1", port)
        if start:
            await client.send(CLIENT_START)
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(bytes(self._buffer[:9])))
            if len(self._buffer) < 9 + length:
                break
            frame.parse_body(memoryview(bytes(self._buffer[9 : 9 + length])))
            del self._buffer[: 9 + length]
            self.frames.append(frame)
            if isinstance(frame, HeadersFrame) and "END_HEADERS" in frame.flags:
                block = list(self._decoder.decode(bytes(frame.data), raw=True))
                self.fields.setdefault(frame.stream_id, []).append(block)  # type: ignore[arg-type]  # raw
        self._notify()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._notify()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._notify()
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)

    def pause_writing(self) -> None:
        self._paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)
        self._paused = None

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def send(self, data: bytes) -> bool:
        """Write `data` (waiting while the socket's buffer is full); False once the connection has ended."""
        transport = self.transport
        if transport is None or self.eof or transport.is_closing():
            return False
        transport.write(data)
        if self._paused is not None:
            await self._paused
        return not self.eof

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        """Wait until `predicate` holds, checked as frames arrive and when the connection ends."""
        async with asyncio.timeout(timeout):
            while not predicate():
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter

    def statuses(self, stream_id: int) -> list[int]:
        """The :status of each header block the server sent on a stream."""
        return [int(v) for block in self.fields.get(stream_id, ()) for n, v in block if n == b":status"]

    def resets(self, stream_id: int) -> list[int]:
        """The error codes of the RST_STREAM frames the server sent on a stream."""
        frames = self.frames
        return [f.error_code for f in frames if isinstance(f, RstStreamFrame) and f.stream_id == stream_id]

    def ended(self, stream_id: int) -> bool:
        """Whether the server ended the stream (END_STREAM on its HEADERS or DATA)."""
        return any(f.stream_id == stream_id and "END_STREAM" in f.flags for f in self.frames)

    def goaway(self) -> GoAwayFrame | None:
        for frame in self.frames:
            if isinstance(frame, GoAwayFrame):
                return frame
        return None

    async def until_goaway(self, timeout: float = WAIT) -> GoAwayFrame | None:
        """Wait for a GOAWAY (returned) or for the connection to end without one (None)."""
        await self.wait_for(lambda: self.eof or self.goaway() is not None, timeout)
        return self.goaway()

    async def until_closed(self, timeout: float = WAIT) -> None:
        await self.wait_for(lambda: self.eof, timeout)

    async def until_ping_ack(self, opaque: bytes, timeout: float = WAIT) -> bool:
        """Wait for the ACK of a PING the test sent (every frame before it was processed) or for the end of
        the connection; whether the ACK came."""

        def acked() -> bool:
            return any(
                isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == opaque for f in self.frames
            )

        await self.wait_for(lambda: self.eof or acked(), timeout)
        return acked()

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        await self.wait_for(lambda: self.eof)
