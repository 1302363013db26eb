"""HTTP/2 client connections (h2c): each stream is an exchange, handled in a task of its own.

A client connection that opens with the HTTP/2 preface is handed over from the HTTP/1.1 `ServerConnection`
to an `H2ServerConnection` on the same port. Every request stream becomes an `H2Exchange`, which offers the
handler what `Exchange` does (`request`, `respond`, `forward`, `task`, `response_started`), so the proxies
handle HTTP/2 requests with the same code. Streams are independent: a slow stream waits for its own window,
and a stream the client resets cancels only its own handler.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import h2.errors
import h2.events
import h2.exceptions

from serving import header
from serving.http import h2forward, wire
from serving.http.error import IdleTimeout, ResponseStartTimeout, status_for
from serving.http.h2base import CONNECTION_SPECIFIC, H2Transport, Inbound, StreamReset
from serving.http.message import Headers, Request
from serving.http.state import ABORTED, DONE, NEW, STARTED
from serving.http.upstream import ForwardTimeouts

if TYPE_CHECKING:
    from serving.http.connection import Connections, Handler, ServerLimits
    from serving.http.h2upstream import H2UpstreamPool
    from serving.http.pool import UpstreamPool

logger = logging.getLogger(__name__)

_DEFAULT_TIMEOUTS: Final = ForwardTimeouts()

RESET_BUDGET: Final = 200
"""Streams a client may reset before their response in a row (each reset since the last stream that
completed counts) before the connection is closed with ENHANCE_YOUR_CALM: the rapid-reset attack
(CVE-2023-44487) opens and cancels streams to make the server start work it never finishes."""

# gRPC status codes for the platform's own HTTP errors (gRPC's "HTTP to gRPC status code mapping", except
# that the platform's 504 is a deadline: the revision timeout ran out).
_DEADLINE_EXCEEDED: Final = 4
_UNAVAILABLE: Final = 14
_GRPC_CODES: Final = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 4}

# Response headers a local answer never takes from the handler: the engine frames the message itself.
_FRAMING: Final = frozenset({header.CONTENT_LENGTH, header.TRANSFER_ENCODING, header.CONNECTION})


class H2Exchange:
    """One request stream and the means to answer it; what a handler gets for an HTTP/2 request."""

    http2 = True
    note: object = None
    """`Exchange.note`; an HTTP/2 stream never takes a fast path, so nothing is decided before its handler."""

    def __init__(self, conn: H2ServerConnection, stream_id: int, request: Request, ended: bool) -> None:
        self.request = request
        self.stream_id = stream_id
        self._conn = conn
        self._state = NEW
        self.body = Inbound(lambda size: conn.h2.ack(stream_id, size))
        if ended:
            self.body.end()
        self._task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None]:
        task = self._task
        if task is None:
            raise RuntimeError("the exchange has no running handler")
        return task

    @property
    def response_started(self) -> bool:
        return self._state != NEW

    @property
    def state(self) -> int:
        return self._state

    @property
    def transport(self) -> H2Transport:
        return self._conn.h2

    @property
    def body_complete(self) -> bool:
        return self.body.ended

    def mark_started(self) -> None:
        self._state = STARTED

    def mark_done(self) -> None:
        self._state = DONE

    def abort(self, code: int = h2.errors.ErrorCodes.INTERNAL_ERROR) -> None:
        """Reset the stream: a started response must never look complete."""
        self._state = ABORTED
        self.body.drop()
        self._conn.h2.reset(self.stream_id, code)

    def end_grpc(self, code: int, message: str) -> bool:
        """End a started gRPC response that cannot be completed (a timeout, a failed upstream) with trailers
        carrying gRPC status `code`, which the client reads as that status, where a reset would read as
        CANCELLED or INTERNAL. False when this is no started gRPC response."""
        if self._state != STARTED or not _is_grpc(self.request):
            return False
        fields = [(b"grpc-status", str(code).encode()), (b"grpc-message", _grpc_message(message))]
        try:
            self._conn.h2.send_headers(self.stream_id, fields, end_stream=True)
        except StreamReset:
            self._state = ABORTED
            return True
        self._state = DONE
        return True

    async def read_body(self, limit: int) -> bytes | None:
        """The whole request body (b"" when there is none), for a handler that answers the stream itself.

        None as soon as it passes `limit` bytes: the rest is then discarded (its flow-control window is
        returned)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            data = await self.body.read()
            if data is None:
                return b"".join(chunks)
            size += len(data)
            if size > limit:
                self.body.drop()
                return None
            chunks.append(data)

    async def respond(self, status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> None:
        """Send a complete local response; the request body, if any, is discarded."""
        if self._state != NEW:
            raise RuntimeError("a response was already sent on this exchange")
        if status < 200:
            raise ValueError("interim (1xx) responses cannot be sent with respond()")
        if status >= 400 and _is_grpc(self.request):
            await self._respond_grpc(status, body)
            return
        bodyless = status in (204, 304) or self.request.method == "HEAD"
        fields = [(b":status", str(status).encode())]
        fields += [
            (n.lower().encode("latin-1"), v.encode("latin-1"))
            for n, v in headers
            if n.lower() not in _FRAMING and n.lower().encode() not in CONNECTION_SPECIFIC
        ]
        if status not in (204, 304):
            fields.append((b"content-length", b"%d" % len(body)))
        self._state = STARTED
        if not self.body.ended:
            self.body.drop()
        h2t = self._conn.h2
        try:
            h2t.send_headers(self.stream_id, fields, end_stream=bodyless or not body)
            if body and not bodyless:
                await h2t.send_data(self.stream_id, body, end_stream=True)
        except StreamReset:
            self._state = ABORTED
            return
        self._state = DONE

    async def _respond_grpc(self, status: int, body: bytes) -> None:
        """A platform error to a gRPC client: a Trailers-Only response with the gRPC status the HTTP status
        stands for (the gRPC spec's HTTP-to-gRPC mapping, with a timeout as DEADLINE_EXCEEDED), so the client
        sees UNAVAILABLE for an overflow rather than UNKNOWN with an HTTP body it cannot read."""
        code = _GRPC_CODES.get(status, 2)  # 2: UNKNOWN
        fields = [
            (b":status", b"200"),
            (b"content-type", b"application/grpc"),
            (b"grpc-status", str(code).encode()),
            (b"grpc-message", _grpc_message(body.decode("utf-8", "replace"))),
        ]
        self._state = STARTED
        if not self.body.ended:
            self.body.drop()
        try:
            self._conn.h2.send_headers(self.stream_id, fields, end_stream=True)
        except StreamReset:
            self._state = ABORTED
            return
        self._state = DONE

    async def forward(
        self,
        pool: UpstreamPool | H2UpstreamPool,
        headers: Headers,
        *,
        timeouts: ForwardTimeouts = _DEFAULT_TIMEOUTS,
        response_headers: Iterable[tuple[str, str]] = (),
        retry_refused: bool = False,
    ) -> int:
        """Relay the request to `pool`'s upstream (HTTP/2 to an `H2UpstreamPool`, HTTP/1.1 otherwise) and
        its response back; return the upstream status. Errors as `Exchange.forward`."""
        if self._state != NEW:
            raise RuntimeError("a response was already sent on this exchange")
        return await h2forward.forward_from_h2(
            self,
            pool,
            headers,
            timeouts=timeouts,
            response_headers=response_headers,
            retry_refused=retry_refused,
        )


def _grpc_message(text: str) -> bytes:
    """`grpc-message`: percent-encoded UTF-8 (the gRPC HTTP/2 protocol)."""
    return urllib.parse.quote(text.strip(), safe=" !#$&'()*+,/:;=?@[]~").encode("ascii")


def _is_grpc(request: Request) -> bool:
    content_type = request.headers.get("content-type")
    return content_type is not None and content_type.startswith("application/grpc")


def _request(fields: list[tuple[bytes, bytes]], client: tuple[str, int]) -> tuple[Request | None, int]:
    """The request a stream's HEADERS describe, or None and the status to refuse it with."""
    method = path = authority = b""
    scheme = b""
    items: list[tuple[str, str]] = []
    cookies: list[str] = []
    for name, value in fields:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":scheme":
                scheme = value
            else:
                return None, 400  # :protocol (extended CONNECT) and unknown pseudo-headers
            continue
        text = name.decode("latin-1")
        if text == header.HOST:
            if not authority:
                authority = value
            continue
        if text == "cookie":
            cookies.append(value.decode("latin-1"))
            continue
        items.append((text, value.decode("latin-1")))
    if method == b"CONNECT" or not method or not path or not scheme:
        return None, 400
    if not authority:
        return None, 400  # nothing to route by
    items.insert(0, (header.HOST, authority.decode("latin-1")))
    if cookies:
        items.append(("cookie", "; ".join(cookies)))  # RFC 9113 section 8.2.3
    target = path.decode("latin-1")
    if not target.startswith("/") and target != "*":
        return None, 400
    request = Request(
        method.decode("ascii", "replace"), target, "2", Headers._trusted(items), client, True, False
    )
    return request, 0


class H2ServerConnection(asyncio.Protocol):
    """An HTTP/2 client connection; it replaces the HTTP/1.1 protocol object once the preface is seen."""

    def __init__(self, handler: Handler, limits: ServerLimits, registry: Connections) -> None:
        self.loop = asyncio.get_running_loop()
        self._handler = handler
        self._limits = limits
        self._registry = registry
        self.h2 = H2Transport(client_side=False, max_header_list_size=limits.max_header_bytes)
        self._exchanges: dict[int, H2Exchange] = {}
        self._client: tuple[str, int] = ("", 0)
        self._resets = 0
        self.draining = False
        self._closed = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    # -- handover and asyncio.Protocol ---------------------------------------------------------------------

    def take_over(self, transport: asyncio.Transport, client: tuple[str, int], data: bytes) -> None:
        """Become the transport's protocol and process what was read so far (starting with the preface)."""
        self._transport = transport
        self._client = client
        self._registry.add(self)
        transport.set_protocol(self)
        self.h2.start(transport)
        self._arm_idle()
        if data:
            self.data_received(data)

    def accept_upgrade(self, settings: str) -> bool:
        """Prepare to take over an `Upgrade: h2c` request with these `HTTP2-Settings`; False: malformed."""
        return self.h2.accept_upgrade(settings)

    def take_over_upgrade(self, transport: asyncio.Transport, request: Request, data: bytes) -> None:
        """Switch an HTTP/1.1 connection whose `Upgrade: h2c` request was accepted (`accept_upgrade`): answer
        101, send the server's SETTINGS, and handle the request as stream 1 (RFC 7540 section 3.2); `data`
        is what the client sent after the request (its preface and frames)."""
        self._transport = transport
        self._client = request.client
        self._registry.add(self)
        transport.set_protocol(self)
        transport.write(b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n")
        self.h2.start(transport)
        items = h2forward.end_to_end(request.headers)
        if h2forward.asks_trailers(request.headers):
            items.append(("te", "trailers"))
        upgraded = Request(
            request.method, request.target, "2", Headers._trusted(items), request.client, True, False
        )
        ex = H2Exchange(self, 1, upgraded, True)
        self._exchanges[1] = ex
        ex._task = self.loop.create_task(self._run(ex))
        if data:
            self.data_received(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover - see take_over
        raise RuntimeError("an H2ServerConnection starts through take_over")

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            events = self.h2.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            logger.debug("HTTP/2 protocol error from %s: %s", self._client, exc)
            self.h2.flush()  # h2 has queued the GOAWAY
            self._close()
            return
        for event in events:
            if self._transport is not None and self._transport.is_closing():
                return  # aborted (the rapid-reset guard): the rest of the batch is the attacker's
            self._event(event)
        self.h2.flush()

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.DataReceived):
            ex = self._exchanges.get(event.stream_id)
            if ex is None:
                self.h2.ack(event.stream_id, event.flow_controlled_length)
            else:
                ex.body.feed(event.data, event.flow_controlled_length)
        elif isinstance(event, h2.events.StreamEnded):
            ex = self._exchanges.get(event.stream_id)
            if ex is not None:
                ex.body.end()
        elif isinstance(event, h2.events.TrailersReceived):
            ex = self._exchanges.get(event.stream_id)
            if ex is not None:
                ex.body.trailers = list(event.headers)
                if event.stream_ended is not None:
                    ex.body.end()
        elif isinstance(event, h2.events.StreamReset):
            self._stream_reset(event.stream_id)
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.h2.wake()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # The client's GOAWAY: it opens no more streams; those running finish.
            self.draining = True
            self.h2.keep_streams()
            if not self._exchanges:
                self._close()

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if self.draining:
            self.h2.reset(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        request, status = _request(list(event.headers), self._client)
        if request is None:
            self.h2.send_headers(
                stream_id, [(b":status", str(status).encode()), (b"content-length", b"0")], end_stream=True
            )
            self.h2.reset(stream_id, h2.errors.ErrorCodes.NO_ERROR)
            return
        ex = H2Exchange(self, stream_id, request, event.stream_ended is not None)
        self._exchanges[stream_id] = ex
        self._cancel_idle()
        ex._task = self.loop.create_task(self._run(ex))

    def _stream_reset(self, stream_id: int) -> None:
        ex = self._exchanges.get(stream_id)
        if ex is None:
            return
        ex.body.fail(StreamReset("the client reset the stream"))
        if ex.state in (NEW, STARTED):
            ex._state = ABORTED
            self._resets += 1
            if self._resets > RESET_BUDGET:
                logger.warning("closing an HTTP/2 connection from %s: too many streams reset", self._client)
                self.h2.h2.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
                self.h2.flush()
                self.abort()
                return
            task = ex._task
            if task is not None and not task.done():
                task.cancel()

    def pause_writing(self) -> None:
        self.h2.pause_writing()

    def resume_writing(self) -> None:
        self.h2.resume_writing()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.h2.lost()
        self._cancel_idle()
        self._registry.discard(self)
        for ex in list(self._exchanges.values()):
            ex.body.fail(StreamReset("the client connection closed"))
            task = ex._task
            if task is not None and not task.done():
                task.cancel()

    # -- the stream's task ---------------------------------------------------------------------------------

    async def _run(self, ex: H2Exchange) -> None:
        try:
            await self._handler(ex)  # type: ignore[arg-type]  # an H2Exchange quacks like an Exchange
        except asyncio.CancelledError:
            if ex.state in (NEW, STARTED):
                ex.abort(h2.errors.ErrorCodes.CANCEL)
        except Exception as exc:
            status = status_for(exc)
            if ex.state != NEW:
                logger.debug("handler failed after the response started", exc_info=True)
                timeout = isinstance(exc, (TimeoutError, ResponseStartTimeout, IdleTimeout))
                if ex.state == STARTED and not ex.end_grpc(
                    _DEADLINE_EXCEEDED if timeout else _UNAVAILABLE, str(exc)
                ):
                    ex.abort()
            else:
                if status == 500:
                    logger.exception("handler failed: %s %s", ex.request.method, ex.request.target)
                await self._answer_error(ex, status)
        else:
            if ex.state == NEW:
                logger.error(
                    "handler returned without responding: %s %s", ex.request.method, ex.request.target
                )
                await self._answer_error(ex, 500)
            else:
                # The handler gave up on a started response (the queue-proxy's revision timeout does so).
                ex.end_grpc(_DEADLINE_EXCEEDED, "request timeout")
        finally:
            self._finish(ex)

    @staticmethod
    async def _answer_error(ex: H2Exchange, status: int) -> None:
        body = b"%d %s\n" % (status, wire.REASONS.get(status, b""))
        try:
            await ex.respond(status, (("content-type", "text/plain; charset=utf-8"),), body)
        except Exception:  # the stream or connection is gone: nothing left to tell
            logger.debug("error answer not sent", exc_info=True)

    def _finish(self, ex: H2Exchange) -> None:
        self._exchanges.pop(ex.stream_id, None)
        if ex.state == DONE:
            self._resets = 0
            if not ex.body.ended:
                # The response is complete but the client is still sending: tell it to stop (RFC 9113
                # section 8.1), returning the window of what it sent meanwhile.
                ex.body.drop()
                self.h2.reset(ex.stream_id, h2.errors.ErrorCodes.NO_ERROR)
        elif ex.state == ABORTED or ex.state == STARTED:
            ex.body.drop()
            self.h2.reset(ex.stream_id, h2.errors.ErrorCodes.CANCEL)
        if not self._exchanges:
            if self.draining:
                self._close()
            else:
                self._arm_idle()

    # -- idle timeout and shutdown -------------------------------------------------------------------------

    def _arm_idle(self) -> None:
        if self._idle_timer is None and not self._closed:
            self._idle_timer = self.loop.call_later(self._limits.keep_alive_timeout, self._idle_expired)

    def _cancel_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if not self._exchanges:
            self._goaway()
            self._close()

    def _goaway(self) -> None:
        if not self._closed:
            self.h2.goaway()

    def start_drain(self) -> None:
        """GOAWAY: the client opens no more streams; the connection closes when the running ones finish."""
        self.draining = True
        self._goaway()
        if not self._exchanges:
            self._close()

    def abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    def _close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
