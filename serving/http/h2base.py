"""What both ends of an HTTP/2 connection share: the sans-IO `h2` state machine on an asyncio transport.

One `H2Transport` per connection (a client's, or one to an upstream): it feeds received bytes to `h2`, writes
what `h2` has to send, and lets stream writers wait for flow-control window and for the socket's write buffer.
`Inbound` holds the DATA of one stream until its reader takes it, and only then returns the window to the
peer: a stream's memory is bounded by the window this side advertises, whoever reads slowly.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import h2.stream
import hpack
from h2.connection import AllowedStreamIDs
from h2.utilities import HeaderValidationFlags
from hpack.struct import Header
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import Frame, HeadersFrame

from serving.http import wire

PREFACE: Final = wire.H2_PREFACE

STREAM_WINDOW: Final = 256 * 1024
"""Receive window advertised per stream: the most of one stream's body held in memory here. 256 KiB keeps
one stream near line rate on loopback (64 KiB, the protocol default, halves it) at a bounded cost."""
CONNECTION_WINDOW: Final = 4 * 1024 * 1024
"""Receive window for the whole connection (all streams together)."""
MAX_CONCURRENT_STREAMS: Final = 250
"""Streams a peer may open at once on one connection (Go's net/http2 default, which Knative's servers use)."""
MAX_FRAME_SIZE: Final = 64 * 1024
"""Largest DATA frame this side sends; larger frames mean fewer writes for big bodies."""

# Response and request headers that are connection-specific in HTTP/2 (RFC 9113 section 8.2.2).
CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"http2-settings"}
)


class StreamReset(Exception):
    """The peer reset the stream (or the connection ended) before it was complete."""

    def __init__(
        self, message: str, *, code: int = h2.errors.ErrorCodes.CANCEL, refused: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.refused = refused
        """Nothing of the stream was processed by the peer (REFUSED_STREAM, or above a GOAWAY's last id)."""


class Inbound:
    """The DATA frames of one stream that its reader has not taken yet.

    Received bytes are acknowledged to the peer (window returned) only when `read` hands them out, so the
    peer can never send more than the advertised window ahead of the reader.
    """

    __slots__ = ("_ack", "_chunks", "_error", "_waiter", "ended", "trailers")

    def __init__(self, ack: Callable[[int], None]) -> None:
        self._ack = ack
        self._chunks: deque[tuple[bytes, int]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self.ended = False
        self.trailers: list[tuple[bytes, bytes]] | None = None

    def feed(self, data: bytes, flow: int) -> None:
        if self._error is not None or self.ended:
            self._ack(flow)  # nobody will read it: return the window at once
            return
        self._chunks.append((data, flow))
        self._wake()

    def end(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        if trailers is not None:
            self.trailers = trailers
        self.ended = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if self.ended:
            # The whole body arrived: a reset now (a server's RST_STREAM NO_ERROR after its complete response,
            # RFC 9113 section 8.1) takes nothing from the reader.
            return
        self._error = error
        self.drop()
        self._wake()

    def drop(self) -> None:
        """Discard what is buffered (returning its window); later DATA is acknowledged as it arrives."""
        chunks, self._chunks = self._chunks, deque()
        total = sum(flow for _, flow in chunks)
        if total:
            self._ack(total)
        if self._error is None:
            self._error = StreamReset("the stream's body was discarded")

    @property
    def pending(self) -> int:
        return len(self._chunks)

    async def read(self) -> bytes | None:
        """The next piece of the body, or None at its end; raises the stream's failure."""
        while True:
            if self._chunks:
                data, flow = self._chunks.popleft()
                if flow:
                    self._ack(flow)
                return data
            if self._error is not None:
                raise self._error
            if self.ended:
                return None
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _FrameBuffer(h2.frame_buffer.FrameBuffer):
    """`h2`'s frame buffer, refusing an overlong frame as soon as its 9-byte header arrives: `h2` checks the
    length only once the whole announced body (up to 16 MiB) is buffered, so a peer could make every
    connection hold that much with one frame header."""

    def __next__(self) -> Frame:
        data = self._data  # the buffered bytes after the preface
        if len(data) >= 9:
            self._validate_frame_length(int.from_bytes(data[:3], "big"))
        return super().__next__()


class _Stream(h2.stream.H2Stream):
    """`h2`'s stream, except that a request without `:authority` or `Host` is handed on: RFC 9113 section
    8.3.1 allows one, where `h2` refuses it as a connection error (which resets every other stream of the
    connection). The rest of its header block is validated as usual, and the handler answers it (with no
    host, a router answers 400)."""

    def _process_received_headers(
        self,
        headers: Iterable[Header],
        header_validation_flags: HeaderValidationFlags,
        header_encoding: bool | str | None,
    ) -> list[Header]:
        fields = list(headers)
        flags = header_validation_flags
        if flags.is_response_header or flags.is_trailer or any(f[0] in _AUTHORITY_FIELDS for f in fields):
            return super()._process_received_headers(fields, flags, header_encoding)
        checked = super()._process_received_headers([*fields, _STAND_IN_HOST], flags, header_encoding)
        return [f for f in checked if f[0] not in _AUTHORITY_FIELDS]  # only the stand-in was one


_AUTHORITY_FIELDS: Final = (b":authority", b"host", ":authority", "host")
_STAND_IN_HOST: Final[Header] = (b"host", b"serving.invalid")
"""Validated in place of the missing authority, and taken out again."""


class _Connection(h2.connection.H2Connection):
    """`h2`'s connection, except that an undecodable header block is a connection error of type
    COMPRESSION_ERROR, as RFC 9113 section 4.3 requires, where `h2` says PROTOCOL_ERROR, and that its streams
    take requests without an authority (`_Stream`)."""

    def _begin_new_stream(self, stream_id: int, allowed_ids: AllowedStreamIDs) -> h2.stream.H2Stream:
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        stream.__class__ = _Stream  # h2 makes its own streams; this class differs from theirs in one method
        return stream

    def _receive_headers_frame(self, frame: HeadersFrame) -> tuple[list[Frame], list[h2.events.Event]]:
        try:
            return super()._receive_headers_frame(frame)
        except h2.exceptions.ProtocolError as exc:
            cause = exc.__cause__
            if type(exc) is not h2.exceptions.ProtocolError or not isinstance(cause, _UNDECODABLE):
                raise
            error = h2.exceptions.ProtocolError(str(exc))
            error.error_code = h2.errors.ErrorCodes.COMPRESSION_ERROR
            raise error from cause


_UNDECODABLE: Final = (hpack.HPACKError, IndexError, TypeError, UnicodeDecodeError)
"""What `h2` lets through from a header block HPACK cannot decode (the oversized ones it reports apart)."""


class H2Transport:
    """An `h2` connection bound to an asyncio transport: flushing, write backpressure, window waits.

    Single-threaded like everything on the loop: events are handled synchronously in `data_received` of the
    owner; coroutines sending on streams wait here for window or for the socket to drain.
    """

    def __init__(self, *, client_side: bool, max_header_list_size: int) -> None:
        config = h2.config.H2Configuration(
            client_side=client_side, header_encoding=None, validate_inbound_headers=True
        )
        self.h2: h2.connection.H2Connection = _Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=client_side,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list_size,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.h2.max_inbound_frame_size = self.h2.local_settings.max_frame_size
        self.h2.decoder.max_header_list_size = max_header_list_size
        buffer = _FrameBuffer(server=not client_side)
        buffer.max_frame_size = self.h2.max_inbound_frame_size
        self.h2.incoming_buffer = buffer
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._upgraded = False
        self._write_paused = False
        self._waiters: list[asyncio.Future[None]] = []

    def accept_upgrade(self, settings: str) -> bool:
        """Server side of `Upgrade: h2c` (RFC 7540 section 3.2): apply the client's `HTTP2-Settings`
        (a base64url SETTINGS payload) and make stream 1 the upgraded request, half-closed from the client.
        False when the settings are malformed: the upgrade is then declined."""
        try:
            payload = base64.urlsafe_b64decode(settings.strip() + "=" * (-len(settings.strip()) % 4))
            self.h2.initiate_upgrade_connection(base64.urlsafe_b64encode(payload))
        except (ValueError, binascii.Error, HyperframeError, h2.exceptions.ProtocolError):
            return False
        self._upgraded = True
        return True

    def start(self, transport: asyncio.Transport) -> None:
        """Send the preface (client) or the server's SETTINGS, and open the connection window."""
        self.transport = transport
        if not self._upgraded:
            self.h2.initiate_connection()  # after an upgrade, accept_upgrade has done so
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.flush()

    def goaway(self, code: int = h2.errors.ErrorCodes.NO_ERROR) -> None:
        """Send GOAWAY (the peer opens no more streams) while the streams already open go on."""
        if self.closed:
            return
        try:
            self.h2.close_connection(code)
        except h2.exceptions.ProtocolError:
            return
        self.flush()
        self.keep_streams()

    def keep_streams(self) -> None:
        """After a GOAWAY either way, let the open streams finish.

        `h2` closes its whole connection state machine on GOAWAY, refusing any later frame, while RFC 9113
        section 6.8 lets the streams below the GOAWAY's last stream id complete: graceful shutdown of gRPC
        servers and of this engine relies on that. The owner refuses new streams itself.
        """
        machine = self.h2.state_machine
        if machine.state == h2.connection.ConnectionState.CLOSED:
            client = self.h2.config.client_side
            machine.state = (
                h2.connection.ConnectionState.CLIENT_OPEN
                if client
                else h2.connection.ConnectionState.SERVER_OPEN
            )

    def flush(self) -> None:
        data = self.h2.data_to_send()
        transport = self.transport
        if data and transport is not None and not self.closed and not transport.is_closing():
            transport.write(data)

    def ack(self, stream_id: int, size: int) -> None:
        """Return `size` bytes of receive window for a stream (and the connection)."""
        if self.closed:
            return
        try:
            self.h2.acknowledge_received_data(size, stream_id)
        except h2.exceptions.ProtocolError:
            return  # the stream or connection is gone: nothing to return
        self.flush()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self.wake()

    def wake(self) -> None:
        """Window opened, the socket drained, or the connection ended: every waiting writer looks again."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def lost(self) -> None:
        self.closed = True
        self.wake()

    async def _wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    async def send_data(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> None:
        """Send `data` on a stream as window allows, waiting for WINDOW_UPDATE and for the socket to drain;
        raises `StreamReset` when the stream or the connection ends first."""
        h2conn = self.h2
        view = memoryview(data)
        while True:
            if self.closed:
                raise StreamReset("the connection closed")
            if self._write_paused:
                await self._wait()
                continue
            try:
                if not view:
                    if end_stream:
                        h2conn.end_stream(stream_id)
                        self.flush()
                    return
                window = min(h2conn.local_flow_control_window(stream_id), h2conn.max_outbound_frame_size)
                if window <= 0:
                    await self._wait()
                    continue
                piece = view[:window]
                view = view[window:]
                h2conn.send_data(stream_id, piece.tobytes(), end_stream=end_stream and not view)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as exc:
                raise StreamReset(f"the stream ended: {exc}") from None
            self.flush()
            if not view:
                return

    def send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], *, end_stream: bool) -> None:
        try:
            self.h2.send_headers(stream_id, headers, end_stream=end_stream)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as exc:
            raise StreamReset(f"the stream ended: {exc}") from None
        self.flush()

    async def drained(self) -> None:
        """Wait while the socket's write buffer is full (a slow peer)."""
        while self._write_paused and not self.closed:
            await self._wait()

    def reset(self, stream_id: int, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        if self.closed:
            return
        try:
            self.h2.reset_stream(stream_id, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return  # already closed both ways
        self.flush()

    def stream_open(self, stream_id: int) -> bool:
        streams = self.h2.streams
        stream = streams.get(stream_id)
        return stream is not None and not stream.closed


def header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None
