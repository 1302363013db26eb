"""One request/response exchange on a client connection: what a handler gets and acts on.

A handler either answers locally (`respond`) or relays to an upstream (`forward`). The request body stays in
the client connection (at most a high-water mark of it is buffered) until `forward` streams it; the response
is relayed by protocol callbacks with no task or await per chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, cast

from serving import header
from serving.http import wire
from serving.http.error import UpstreamConnectError, UpstreamError
from serving.http.message import Headers, Request, connection_tokens
from serving.http.pool import UpstreamPool
from serving.http.state import ABORTED, DONE, NEW, STARTED, keeps_alive
from serving.http.upstream import Awaited, Completion, ForwardTimeouts, StaleConnection, UpstreamConnection

if TYPE_CHECKING:
    from serving.http.connection import ServerConnection
    from serving.http.h2upstream import H2UpstreamPool

_DEFAULT_TIMEOUTS: Final = ForwardTimeouts()

# Request headers the engine never copies upstream: hop-by-hop ones (Transfer-Encoding among them: the engine
# writes its own). `Expect` is answered by the engine (100 Continue when the body is about to be streamed).
_NOT_FORWARDED: Final = header.HOP_BY_HOP | {"expect"}

# Response headers a local response never takes from the handler: the engine frames the message itself.
_FRAMING: Final = frozenset({header.CONTENT_LENGTH, header.TRANSFER_ENCODING, header.CONNECTION})


def _discard(data: bytes) -> None:
    """Body sink for a request whose body nobody will read any more."""


class Exchange:
    """A request and the means to answer it; handed to the handler, which must answer exactly once.

    Per-request state that is usually untouched lives in class attributes, so a plain GET costs only the few
    instance attributes `__init__` sets.
    """

    _state = NEW
    _keep = False  # the client connection stays open after this exchange
    # The request body as the client connection hands it over.
    _body: list[bytes] | None = None  # buffered chunks (None: nothing buffered yet)
    _buffered = 0
    _body_complete = False
    _body_error = False
    _body_taken = False
    _body_sink: Callable[[bytes], None] | None = None
    _body_end: Callable[[], None] | None = None
    _trailers: list[tuple[bytes, bytes]] | None = None
    # Body framing, known once `forward` looks at it.
    _has_body = False
    _chunked = False
    _length: str | None = None  # the client's Content-Length of a body that is not chunked
    _retry_refused = False  # a marked 502 raises instead of being relayed (see `forward`)
    _expect = False
    # Bytes after an upgrade request, held until the upstream switches protocols.
    _raw: list[bytes] | None = None
    _raw_sink: Callable[[bytes], None] | None = None
    # A forward started by `forward_now`, while it runs.
    _upstream: UpstreamConnection | None = None
    _done: Completion | None = None
    note: object = None
    """The handler's own: what its `FastPath` decided about this exchange before leaving it to the handler
    task, so that the task does not decide again (the router's pick of a revision)."""

    def __init__(self, conn: ServerConnection, request: Request) -> None:
        self.request = request
        self._conn = conn

    @property
    def task(self) -> asyncio.Task[None]:
        """The task the handler runs in (its connection's, shared with the connection's other requests in
        turn): what a deadline cancels. Cheaper than `asyncio.current_task()`, a Python function in 3.11."""
        task = self._conn._task
        if task is None:
            raise RuntimeError("the exchange's connection has no running handler")
        return task

    @property
    def response_started(self) -> bool:
        """Whether any byte of a response reached the client (a local error answer is then too late)."""
        return self._state != NEW

    @property
    def retry_refused(self) -> bool:
        return self._retry_refused

    @property
    def state(self) -> int:
        """NEW, STARTED, DONE or ABORTED (`serving.http.state`)."""
        return self._state

    @property
    def keep(self) -> bool:
        """Whether the client connection stays open after this exchange (decided with the response head)."""
        return self._keep

    def decide_keep(self, until_close: bool) -> bool:
        """Decide, as the response head is written, whether the client connection outlives this exchange;
        `until_close`: the response body is delimited by closing the connection."""
        request = self.request
        keep = self._keep = keeps_alive(
            request.keep_alive, request.upgrade, self._body_complete, self._conn.draining, until_close
        )
        return keep

    def mark_started(self) -> None:
        """A response head went to the client."""
        self._state = STARTED

    def mark_done(self) -> None:
        """The response (or the relay after an upgrade) is complete."""
        self._state = DONE

    def mark_aborted(self) -> None:
        """The client connection was reset mid-response (or before one, after a protocol error)."""
        self._state = ABORTED

    async def respond(self, status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> None:
        """Send a complete local response (probes, errors); the request body, if any, is discarded.

        The connection stays open for the next request only if the request body had fully arrived; otherwise
        it is closed after the response, because the rest of the body cannot be told from the next request
        without reading it all.
        """
        self.respond_now(status, headers, body)
        await self._conn.drain()

    def respond_now(self, status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> None:
        """`respond` without waiting for the client to read it: for a handler answering from a callback."""
        if self._state != NEW:
            raise RuntimeError("a response was already sent on this exchange")
        if status < 200:
            raise ValueError("interim (1xx) responses cannot be sent with respond()")
        request = self.request
        keep = self.decide_keep(False)
        parts = [wire.status_line(status)]
        if headers:
            parts.append(wire.encode_headers((n, v) for n, v in headers if n.lower() not in _FRAMING))
        if status != 204 and status != 304:
            parts.append(b"content-length: %d\r\n" % len(body))
        if request.version == "1.1":
            if not keep:
                parts.append(b"connection: close\r\n")
        elif keep:
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if body and request.method != "HEAD" and status != 204 and status != 304:
            parts.append(body)
        self._state = DONE
        if not self._body_complete:
            self.discard_body()
        self._conn.write(b"".join(parts))

    async def forward(
        self,
        pool: UpstreamPool | H2UpstreamPool,
        headers: Headers,
        *,
        timeouts: ForwardTimeouts = _DEFAULT_TIMEOUTS,
        response_headers: Iterable[tuple[str, str]] = (),
        retry_refused: bool = False,
    ) -> int:
        """Relay the request to `pool`'s upstream and its response back; return the upstream status.

        With `retry_refused` (a proxy in front of queue-proxies), a 502 marked `K-App-Refused` for a request
        without a body raises `UpstreamConnectError` instead of being relayed: the queue-proxy's app refused
        the connection, so another pod may take the request. Without it the mark is only dropped, so an app
        cannot make a proxy retry a request it has processed.

        See the package documentation for the errors raised. Cancel-safe: if the calling task is cancelled,
        the upstream connection is closed (never pooled half-used) and a started response is aborted.
        """
        if not isinstance(pool, UpstreamPool):
            return await pool.forward_http1(
                self,
                headers,
                timeouts=timeouts,
                response_headers=response_headers,
                retry_refused=retry_refused,
            )
        if self._state != NEW or self._body_taken:
            raise RuntimeError("a response was already sent, or the body streamed, on this exchange")
        self._retry_refused = retry_refused
        if not self._body_complete or self._body is not None:
            self._scan_framing()
        head = _request_head(self.request, headers, pool.address, self._chunked, self._length)
        extra = wire.encode_headers(response_headers) if response_headers else b""
        loop = self._conn.loop
        retried = False
        while True:
            conn = pool.take_idle()
            if conn is None:
                conn = await pool.connect(timeouts.connect)
            done: asyncio.Future[int] = loop.create_future()
            conn.start(self, head, extra, timeouts, Awaited(done))
            try:
                return await done
            except StaleConnection as exc:
                # A pooled connection the upstream had already closed; nothing was processed, so one retry on
                # a fresh connection is safe (only requests without a body get here).
                self._body_taken = False
                if retried:
                    raise UpstreamError(str(exc), response_started=False) from None
                retried = True
            except UpstreamConnectError:
                # The upstream's app refused (a marked 502): nothing reached it and the request has no body,
                # so the handler may forward this exchange again, elsewhere.
                self._body_taken = False
                raise
            except UpstreamError as failed:
                # The upstream failed before any of its response reached the client: a request without a body
                # can still be sent elsewhere; whether it may be (it may have been processed) is the
                # handler's call, by its method. (Its own name: compiled, `exc` is typed StaleConnection.)
                if not failed.response_started and not self._has_body and self._state == NEW:
                    self._body_taken = False
                raise
            except asyncio.CancelledError:
                conn.cancel(self)
                raise

    @property
    def forwardable_now(self) -> bool:
        """Whether `forward_now` may take this exchange: it arrived whole, asks no upgrade, and nothing of it
        was answered or forwarded yet."""
        return (
            self._state == NEW and self._body_complete and not self._body_taken and not self.request.upgrade
        )

    def forward_now(
        self,
        conn: UpstreamConnection,
        headers: Headers,
        timeouts: ForwardTimeouts,
        done: Completion,
        *,
        retry_refused: bool = False,
    ) -> None:
        """Relay the request on `conn` (an idle connection of the upstream's pool) from the calling callback,
        with no task: `done` is told how it ended, the upstream status or the error. Only for an exchange that
        is `forwardable_now`, or again after `rewind`. `retry_refused` is `forward`'s.

        The caller owns the exchange's end: once `done` is told, or after `abandon`, it answers locally
        (`respond_now`) if nothing of a response started, or forwards it again (`rewind`, then `forward` from
        a task of its own, or `forward_now`), then calls `finished`. If the client leaves first, `done` is
        told `CancelledError` (the connection is closing; nothing can be answered), also while that task
        forwards.
        """
        self._retry_refused = retry_refused
        if self._body is not None:
            self._scan_framing()
        head = _request_head(self.request, headers, conn.address, self._chunked, self._length)
        self._upstream = conn
        self._done = done
        conn.start(self, head, b"", timeouts, done)

    def rewind(self) -> None:
        """After a `forward_now` that failed before any of its response reached the client: an exchange
        without a body may be forwarded again, as `forward` allows after its failures. Whether it should be
        (the upstream may have processed it, unless it was a `StaleConnection` or, with `retry_refused`, an
        `UpstreamConnectError`) is the handler's call."""
        if self._state != NEW or self._has_body:
            raise RuntimeError("only an unanswered exchange without a body can be forwarded again")
        self._body_taken = False

    def abandon(self) -> None:
        """Give up a forward started by `forward_now` (its deadline passed): the upstream connection is closed
        and a response already started is aborted; `done` is not told."""
        conn = self._upstream
        if conn is not None:
            self._upstream = None
            conn.cancel(self)

    def finished(self) -> None:
        """The end of an exchange forwarded by `forward_now`: its connection goes on to the next request."""
        self._upstream = self._done = None
        self._conn.fast_finished(self)

    def client_left(self) -> None:
        """The client connection was lost during a `forward_now`: its `done` is told `CancelledError`."""
        done, self._done = self._done, None
        self._upstream = None
        if done is not None and not done.done():
            done.set_exception(asyncio.CancelledError())

    def begin_forward(self) -> None:
        """Check that the exchange may be forwarded now and learn its body's framing (for forwarders other
        than `forward`'s own, which translate the request to HTTP/2)."""
        if self._state != NEW or self._body_taken:
            raise RuntimeError("a response was already sent, or the body streamed, on this exchange")
        if not self._body_complete or self._body is not None:
            self._scan_framing()

    def _scan_framing(self) -> None:
        """How the request body is framed (llhttp has validated the headers); only requests with a body."""
        self._has_body = True
        for name, value in self.request.headers._items:
            if name == header.TRANSFER_ENCODING:
                self._chunked = True  # llhttp accepts only codings that end with chunked
            elif name == header.CONTENT_LENGTH:
                self._length = value.strip()  # llhttp refuses a second, different one
            elif name == "expect":
                self._expect = self.request.version == "1.1" and value.strip().lower() == "100-continue"

    # -- the request body and upgrade bytes, as the client connection hands them over --------------------

    @property
    def body_complete(self) -> bool:
        """Whether the whole request body (if any) has been read from the client."""
        return self._body_complete

    @property
    def body_failed(self) -> bool:
        """Whether the request body was malformed (the client connection has answered it already)."""
        return self._body_error

    @property
    def connection(self) -> ServerConnection:
        """The client connection this exchange arrived on."""
        return self._conn

    @property
    def has_body(self) -> bool:
        """Whether a request body is (or was) streamed upstream; known once `forward` has started."""
        return self._has_body

    @property
    def chunked(self) -> bool:
        return self._chunked

    @property
    def expects_continue(self) -> bool:
        """The client waits for `100 Continue` before it sends the body."""
        return self._expect

    @property
    def trailers(self) -> list[tuple[bytes, bytes]]:
        return self._trailers or []

    @property
    def buffered(self) -> int | None:
        """Bytes of body held while no forwarder streams it; None once one does (or it is discarded)."""
        return None if self._body_sink is not None or self._body_complete else self._buffered

    def body_received(self, data: bytes) -> None:
        """A piece of the request body: to the forwarder streaming it, or buffered up to the high-water mark
        (then the client connection stops reading)."""
        sink = self._body_sink
        if sink is not None:
            sink(data)
            return
        if self._body is None:
            self._body = [data]
        else:
            self._body.append(data)
        self._buffered += len(data)
        if self._buffered > wire.BODY_HIGH_WATER:
            self._conn.pause(wire.PAUSE_BODY)

    def trailer_received(self, name: bytes, value: bytes) -> None:
        if self._trailers is None:
            self._trailers = []
        self._trailers.append((name, value))

    def body_ended(self) -> None:
        """The request body (and its trailers) arrived whole."""
        self._body_complete = True
        end = self._body_end
        if end is not None:
            self._body_end = None
            end()

    def body_malformed(self) -> None:
        self._body_error = True

    def raw_received(self, data: bytes) -> None:
        """Bytes after an upgrade request: held until the upstream agrees to switch, then relayed."""
        sink = self._raw_sink
        if sink is not None:
            sink(data)
            return
        if self._raw is None:
            self._raw = []
        self._raw.append(data)
        if sum(map(len, self._raw)) > wire.BODY_HIGH_WATER:
            self._conn.pause(wire.PAUSE_BODY)

    def relay_raw(self, sink: Callable[[bytes], None]) -> list[bytes]:
        """The upstream switched protocols: return the held bytes; later ones go straight to `sink`."""
        held = self._raw or []
        self._raw = None
        self._raw_sink = sink
        self._conn.resume(wire.PAUSE_BODY)
        return held

    def stream_body(self, sink: Callable[[bytes], None], end: Callable[[], None]) -> None:
        """The rest of the body goes to `sink` as it arrives, then `end` is called (after `take_body`)."""
        self._body_sink = sink
        self._body_end = end

    def sent_without_body(self) -> None:
        """The request went upstream with no body to stream; a retry may send it again."""
        self._body_taken = True

    def discard_body(self) -> None:
        """Drop the rest of the request body as it arrives instead of buffering it."""
        self._body_sink = _discard
        self._body_end = None
        self._body = None
        self._buffered = 0
        self._conn.resume(wire.PAUSE_BODY)

    async def read_body(self, limit: int) -> bytes | None:
        """The whole request body (b"" when there is none), for a handler that answers the request itself.

        None as soon as it passes `limit` bytes: the rest is then discarded unread (the connection closes
        after the answer). A client that waits for `100 Continue` gets it first."""
        self.begin_forward()
        if self._expect and not self._body_complete:
            self._conn.write(wire.CONTINUE)
        chunks = self.take_body()
        size = 0
        for chunk in chunks:
            size += len(chunk)
        if size > limit:
            self.discard_body()
            return None
        if not self._body_complete:
            reader = _BodyReader(self._conn.loop.create_future(), chunks, size, limit)
            self.stream_body(reader.add, reader.end)
            try:
                complete = await reader.done
            finally:
                if not self._body_complete:
                    self.discard_body()
            if not complete:
                return None
        return b"".join(chunks)

    def take_body(self) -> list[bytes]:
        """Hand the buffered request body chunks over to a forwarder, which streams the rest itself."""
        chunks = self._body or []
        self._body = None
        self._buffered = 0
        self._body_taken = True
        self._conn.resume(wire.PAUSE_BODY)
        return chunks


class _BodyReader:
    """Collects a streamed request body for `Exchange.read_body`, up to its limit."""

    def __init__(self, done: asyncio.Future[bool], chunks: list[bytes], size: int, limit: int) -> None:
        self.done = done
        self.chunks = chunks
        self.size = size
        self.limit = limit

    def add(self, data: bytes) -> None:
        if self.done.done():
            return
        self.size += len(data)
        if self.size > self.limit:
            self.done.set_result(False)
        else:
            self.chunks.append(data)

    def end(self) -> None:
        if not self.done.done():
            self.done.set_result(True)


NativeHead = Callable[[str, str, list[tuple[str, str]], frozenset[str]], "bytes | None"]
_NATIVE_HEAD: Final = cast("NativeHead | None", wire.native("request"))
"""The usual request head written in C (`_head.c`): under a third of the instructions of the f-strings."""


def _request_head(
    request: Request, headers: Headers, address: str, chunked: bool, length: str | None
) -> bytes:
    """The upstream request head: hop-by-hop headers dropped, framing and upgrade written by the engine.

    The body's framing is always the engine's: a chunked body is re-chunked, and a body of `length` bytes
    gets the client's Content-Length (llhttp has checked it) whatever the handler's headers say. A client's
    `Connection` tokens drop the headers they name, except those that frame the message, route it or that a
    proxy writes itself (`header.is_protected`): dropping Content-Length while relaying the body would make
    the next hop read the body as another request.
    """
    items = headers._items
    native = _NATIVE_HEAD
    if native is not None and not (chunked or length is not None or request.upgrade):
        # No body to frame: the head is the request line and the fields as they are, unless one is
        # hop-by-hop, Host is missing or a text is not a plain Latin-1 str, which the general way handles.
        head = native(request.method, request.target, items, _NOT_FORWARDED)
        if head is not None:
            return head
    lines = [f"{name}: {value}\r\n" for name, value in items if name not in _NOT_FORWARDED]
    if len(lines) != len(items):
        # Something hop-by-hop was dropped; a Connection header may name more headers to drop.
        tokens = connection_tokens([value for name, value in items if name == header.CONNECTION])
        if tokens:
            tokens = {token for token in tokens if not header.is_protected(token)}
        if tokens:
            lines = [
                f"{name}: {value}\r\n"
                for name, value in items
                if name not in _NOT_FORWARDED and name not in tokens
            ]
    if chunked or length is not None:
        # A body is on its way: the head must frame exactly it, as the engine will send it.
        lines = [line for line in lines if not line.startswith("content-length:")]
        if length is not None and not chunked:
            lines.append(f"content-length: {length}\r\n")
    if not (items and items[0][0] == header.HOST) and header.HOST not in headers:
        lines.append(f"host: {address}\r\n")
    if request.upgrade:
        upgrade = headers.get(header.UPGRADE) or request.headers.get(header.UPGRADE) or ""
        lines.append(f"connection: upgrade\r\nupgrade: {upgrade}\r\n")
    if chunked:
        # Every Transfer-Encoding field, as llhttp read them: their codings end with the chunked it framed by.
        codings = ", ".join(request.headers.get_all(header.TRANSFER_ENCODING))
        lines.append(f"transfer-encoding: {codings or 'chunked'}\r\n")
    text = f"{request.method} {request.target} HTTP/1.1\r\n{''.join(lines)}\r\n"
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")
