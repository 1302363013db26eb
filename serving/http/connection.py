"""Client connections: parse HTTP/1.1 requests with llhttp, run their handlers one after another, in order.

One `ServerConnection` Protocol per client connection. Requests are parsed as bytes arrive; the handler of the
first one runs at once while pipelined ones wait (and the socket stops being read) until it has finished. A
client that disconnects cancels the running handler, which is how queued requests leave their queues and
upstream requests are abandoned at once.

Handlers run in one task per connection, started with the connection's first request and kept while the
connection stays open: between requests it waits for the next one. A task per request would cost more than
the rest of the engine's own work on a small request (creating, registering and freeing an asyncio task is
several thousand instructions in CPython 3.11). So a handler shares its task, and the context variables it
sets, with the handlers of the connection's earlier requests; `asyncio.timeout` and cancellation behave as in
a task of its own, because a cancellation always ends the connection.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Final, Protocol, cast

import httptools

from serving import header
from serving.http import wire
from serving.http.error import status_for
from serving.http.exchange import Exchange
from serving.http.message import Headers, Request, connection_tokens
from serving.http.state import ABORTED, DONE, NEW, STARTED
from serving.http.wire import H2_PREFACE as PREFACE

if TYPE_CHECKING:
    from serving.http.h2server import H2ServerConnection
    from serving.http.relay import Relay
    from serving.http.upstream import UpstreamConnection

logger = logging.getLogger(__name__)

Handler = Callable[[Exchange], Awaitable[None]]

FastPath = Callable[[Exchange], bool]
"""A handler's synchronous way in: called for a request that arrived whole, when nothing runs before it, from
the read that completed it. True: it took the exchange, forwarding it without a task (`Exchange.forward_now`),
and will call `Exchange.finished` at its end. False: it did nothing, and the handler runs in the task."""

# After a response that leaves unread request bytes behind, the engine half-closes and keeps reading (and
# dropping) for this long before closing: closing at once would reset the connection and could destroy the
# response before the client reads it (the "lingering close" of RFC 9112 section 9.6).
_LINGER: Final = 2.0

# Size of a read from a client socket, and the least a read is cut down to while a body waits for its handler.
_READ_SIZE: Final = 64 * 1024
_MIN_READ: Final = 4 * 1024
_buffers = threading.local()


def _read_view() -> memoryview:
    """This thread's read buffer: one per thread, because one event loop parses one read at a time."""
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(bytearray(_READ_SIZE))
    return view


# The usual methods, decoded once.
_METHODS: Final = {m.encode("ascii"): m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}

NativeFields = Callable[[list[tuple[bytes, bytes]]], list[tuple[str, str]]]
_NATIVE_FIELDS: Final = cast("NativeFields | None", wire.native("fields"))
"""Header fields decoded in C (`_head.c`): four fifths of the instructions of a decode and a lower per field;
what is left is allocating the strings."""

# Handler outcomes, for `_finish_exchange`.
_OK: Final = 0
_FAILED: Final = 1
_CANCELLED: Final = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerLimits:
    """Protocol limits on client connections."""

    max_header_bytes: int = 65536
    """Largest request head (request line and headers) in bytes; larger ones get 431. 64 KiB, as Go's
    default MaxHeaderBytes order of magnitude and far above what browsers send."""
    max_headers: int = 100
    """Most header fields in one request; more get 431 (Go and nginx accept about as many)."""
    header_read_timeout: float = 10.0
    """Seconds to receive a whole request head once it has started (slowloris guard): then the connection is
    closed."""
    keep_alive_timeout: float = 75.0
    """Seconds an idle client connection is kept open between requests (nginx's default)."""


class _Reject(Exception):
    """Raised from a parser callback to answer the request with `status` and close."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _origin_form(target: str, items: list[tuple[str, str]]) -> str:
    """The origin-form of a request-target that is not one: `*` (OPTIONS) stays; an absolute-form target
    (`http://host/path`) becomes its path, and its authority replaces Host, as RFC 9112 section 3.2.2 asks of
    a proxy, so that every hop routes by the same name the app sees. Anything else is refused."""
    if target == "*":
        return target
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise _Reject(400)
    slash = rest.find("/")
    query = rest.find("?")
    end = min(i for i in (slash, query, len(rest)) if i != -1)
    authority, path = rest[:end], rest[end:]
    if not authority or "@" in authority or any(c in authority for c in " \t\\"):
        raise _Reject(400)
    for i, (name, _) in enumerate(items):
        if name == header.HOST:
            items[i] = (header.HOST, authority)
            break
    else:
        items.append((header.HOST, authority))
    return path if path.startswith("/") else "/" + path


def _upgrade_token(headers: Headers) -> str:
    """The protocol an upgrade request asks for, lower-case (`h2c`, `websocket`)."""
    return (headers.get(header.UPGRADE) or "").strip().lower()


def _content_length(headers: Headers) -> int | None:
    """A request's declared body length (0 without one); None when it cannot be read as one number."""
    values = headers.get_all(header.CONTENT_LENGTH)
    if not values:
        return 0
    if len(set(values)) != 1 or not values[0].strip().isdigit():
        return None
    return int(values[0])


class ServerConnection(wire.ReadPause, asyncio.BufferedProtocol):
    """One client connection: parser state, the queue of exchanges, flow control.

    A buffered protocol, so that the engine decides how much it reads: while a request body waits for its
    handler, reads are cut to what is left of the high-water mark, and no more than that mark of a body is
    ever held in memory. Reads land in a buffer shared by the thread's connections (each read is parsed at
    once, and the parser copies out what it keeps).
    """

    def __init__(
        self, handler: Handler, limits: ServerLimits, registry: Connections, fast: FastPath | None = None
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._handler = handler
        self._fast = fast
        self._undispatched: Exchange | None = None
        """The first queued exchange, whose head completed in the read being parsed: dispatched after it."""
        self._running_fast: Exchange | None = None
        """The exchange the fast path took, until it calls `Exchange.finished`."""
        self._limits = limits
        self._registry = registry
        self._clock: Callable[[], float] = self.loop.time
        self.transport: asyncio.Transport | None = None
        self.send: Callable[[bytes], None] | None = None
        """The transport's `write`, bound once connected: the upstream side relays responses with it."""
        self._new_parser()
        self._client: tuple[str, int] = ("", 0)
        self._queue: deque[Exchange] = deque()
        # The queue's methods the hot path calls, bound once, as the parser's are (`_new_parser`).
        self._enqueue: Callable[[Exchange], None] = self._queue.append
        self._dequeue: Callable[[], Exchange] = self._queue.popleft
        self._parsing: Exchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.Future[None] | None = None  # the task waits on it for the next request
        self._paused = 0
        self.write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.write_listener: UpstreamConnection | None = None
        self.relay: Relay | None = None
        self._upgraded = False
        self._stopped = False
        self._closed = False
        self.draining = False
        self._error_status = 0
        self._head_method = False  # the request parsed last is a HEAD: an error answer to it has no body
        self._url = b""
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._max_header_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._header_read_timeout = limits.header_read_timeout
        self._keep_alive_timeout = limits.keep_alive_timeout
        self._head_raw = 0
        self._head_unchecked = False
        self._head_started = 0.0
        self._in_head = False
        self._refused = 0
        """The status a parser callback refused the request with (`_Reject`), for `data_received`."""
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_step = min(limits.header_read_timeout, limits.keep_alive_timeout)
        self._linger: asyncio.TimerHandle | None = None
        self._view = _read_view()
        self._fresh = True  # nothing read yet: an HTTP/2 preface may come instead of a request
        self._early = b""
        self._h2c: tuple[H2ServerConnection, Request] | None = None  # an accepted `Upgrade: h2c`
        self._declined_upgrade = False
        self._raw_body_left = 0  # body bytes of a declined upgrade, which the parser does not see

    def _new_parser(self) -> None:
        """A request parser for what the client sends from now on, and the methods of it the hot path calls,
        bound once: compiled code looks a method called on the parser up by name on every call."""
        parser = httptools.HttpRequestParser(self)
        self._parser = parser
        self._feed: Callable[[bytes | memoryview], None] = parser.feed_data
        self._parsed_method: Callable[[], bytes] = parser.get_method
        self._keeps_alive: Callable[[], bool] = parser.should_keep_alive
        self._upgrades: Callable[[], bool] = parser.should_upgrade

    # -- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.send = self.transport.write
        wire.set_nodelay(transport.get_extra_info("socket"))
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._client = (str(peer[0]), int(peer[1]))
        self._registry.add(self)
        self._head_started = self._clock()
        self._set_deadline(self._head_started + self._limits.header_read_timeout)

    def get_buffer(self, sizehint: int) -> memoryview:
        ex = self._parsing
        if ex is not None:
            buffered = ex.buffered
            if buffered is not None:
                # A body waits for its handler: read no more than the high-water mark leaves room for.
                return self._view[: max(wire.BODY_HIGH_WATER - buffered, _MIN_READ)]
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._view[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        if self._fresh and self._h2_preface(data):
            return
        if self._upgraded:
            self._raw_received(bytes(data))
            return
        if self._stopped:
            return  # closing: what the client still sends is dropped
        if self._raw_body_left:
            data = self._raw_body(data)
            if not data:
                return
        in_head = self._in_head
        if in_head or len(data) > self._max_header_bytes:
            self._head_unchecked = True  # this head may be larger than the limit: measure it when complete
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade as exc:
            self._dispatch_parsed(fast=False)
            rest = bytes(data[exc.args[0] :])
            if self._h2c is not None:
                self._switch_to_h2c(rest)
                return
            if self._declined_upgrade:
                # Served over HTTP/1.1 instead: parsing starts over on what follows (its body first).
                self._declined_upgrade = False
                self._new_parser()
                if rest:
                    self.data_received(rest)
                return
            self._upgraded = True
            if rest:
                self._raw_received(rest)
            return
        except httptools.HttpParserError as exc:
            refused, self._refused = self._refused, 0
            if refused:
                self._reject(refused)
            elif isinstance(exc, httptools.HttpParserCallbackError):
                logger.error("request parsing failed", exc_info=exc.__context__)
                self._reject(500)
            else:
                self._reject(400)
            ex = self._undispatched
            if ex is not None and (ex.body_failed or ex.state != NEW):
                self._undispatched = None  # answered by `_reject`
            self._dispatch_parsed(fast=False)
            return
        if self._undispatched is not None:
            self._dispatch_parsed(fast=True)
        if self._in_head:
            if not in_head:
                # A head began in this read and is still incomplete: from now on it is timed (slowloris).
                # Heads that arrive whole, the usual case, are never timed and cost no clock read.
                self._head_started = now = self._clock()
                if not self._queue:
                    self._set_deadline(now + self._header_read_timeout)
            if len(self._raw_headers) > self._max_headers:
                self._reject(431)
            elif in_head:
                # A whole read went into one unfinished head: llhttp accumulates a single header line in
                # memory, so bound it here too.
                self._head_raw += len(data)
                if self._head_raw > self._max_header_bytes:
                    self._reject(431)

    def _h2_preface(self, data: bytes | memoryview) -> bool:
        """The connection's first bytes: an HTTP/2 preface hands the connection over to `H2ServerConnection`
        (True); a few bytes that may still become one are held (True); anything else is HTTP/1.1 (False)."""
        early = self._early + bytes(data[: len(PREFACE)])
        if early[: len(PREFACE)] != PREFACE[: len(early)]:
            self._fresh = False
            if self._early:
                self._early = b""
                self.data_received(early + bytes(data[len(PREFACE) :]))
                return True
            return False
        if len(early) < len(PREFACE):
            self._early = early
            return True
        self._fresh = False
        self._stopped = True
        transport = self.transport
        if transport is None:
            return True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._registry.discard(self)
        rest = bytes(data[len(PREFACE) - len(self._early) :])
        from serving.http.h2server import H2ServerConnection  # HTTP/2 is loaded on first use

        H2ServerConnection(self._handler, self._limits, self._registry).take_over(
            transport, self._client, PREFACE + rest
        )
        self._early = b""
        return True

    def _upgrade_h2c(self, request: Request) -> Request | None:
        """`Upgrade: h2c` (RFC 7540 section 3.2). Accepted (None: switch at the upgrade point) for a request
        without a body, with one valid `HTTP2-Settings` named in `Connection`, nothing before it still
        running and the server not draining; otherwise declined, as the RFC allows: the request without its
        upgrade, answered over HTTP/1.1 (its body, which the parser skips after an upgrade head, is read by
        `_raw_body`)."""
        headers = request.headers
        settings = headers.get_all(header.HTTP2_SETTINGS)
        chunked = header.TRANSFER_ENCODING in headers
        length = _content_length(headers)
        if (
            len(settings) == 1
            and not chunked
            and not length
            and not self._queue
            and not self.draining
            and header.HTTP2_SETTINGS in connection_tokens(headers.get_all(header.CONNECTION))
        ):
            from serving.http.h2server import H2ServerConnection  # HTTP/2 is loaded on first use

            h2c = H2ServerConnection(self._handler, self._limits, self._registry)
            if h2c.accept_upgrade(settings[0]):
                self._h2c = (h2c, request)
                return None
        if chunked or length is None:
            return request  # refused below as any upgrade with a body it cannot frame
        self._declined_upgrade = True
        self._raw_body_left = length
        kept = [(n, v) for n, v in headers._items if n != header.UPGRADE and n != header.HTTP2_SETTINGS]
        return Request(
            request.method,
            request.target,
            request.version,
            Headers._trusted(kept),
            request.client,
            request.keep_alive,
            False,
        )

    def _raw_body(self, data: bytes | memoryview) -> bytes | memoryview:
        """Hand a declined upgrade's body to its exchange; return what follows it."""
        piece = data[: self._raw_body_left]
        self._raw_body_left -= len(piece)
        ex = self._parsing
        if ex is not None:
            ex.body_received(bytes(piece))
            if not self._raw_body_left:
                ex.body_ended()
        return data[len(piece) :]

    def _switch_to_h2c(self, rest: bytes) -> None:
        """Hand the connection to the accepted `Upgrade: h2c` request's `H2ServerConnection`."""
        assert self._h2c is not None
        h2c, request = self._h2c
        self._h2c = None
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._registry.discard(self)
        self._wake_task()  # it finds nothing queued and ends
        transport = self.transport
        if transport is None or self._closed:
            return
        h2c.take_over_upgrade(transport, request, rest)

    def eof_received(self) -> bool | None:
        if self.relay is not None:
            return self.relay.client_eof()
        return None  # close: connection_lost cancels a running handler

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._registry.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._wake_drainers()
        if self.relay is not None:
            self.relay.client_lost()
            return
        listener = self.write_listener
        if listener is not None:
            listener.client_lost()
        fast = self._running_fast
        if fast is not None:
            self._running_fast = None
            fast.client_left()
        if self._wake_task():
            return  # it finds the connection closed and ends
        task = self._task
        if task is not None and not task.done() and self._queue and self._queue[0].state in (NEW, STARTED):
            task.cancel()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.write_listener is not None:
            self.write_listener.pause(wire.PAUSE_PEER)

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drainers()
        if self.write_listener is not None:
            self.write_listener.resume(wire.PAUSE_PEER)

    # -- llhttp callbacks ---------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._raw_headers = []
        self._head_raw = 0
        self._in_head = True
        self._head_method = False

    def on_url(self, url: bytes) -> None:
        # The usual target comes in one piece: kept as it is, without a concatenation's new object.
        self._url = self._url + url if self._url else url

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect raw pairs; checking and decoding them all at the end of the head is cheaper.

        Memory stays bounded: a head still unfinished after a read is checked (count and size) at the end of
        that read in `data_received`, so at most one read's worth of header pairs ever exists at a time.
        """
        if self._in_head:
            self._raw_headers.append((name, value))
        elif self._parsing is not None:
            self._parsing.trailer_received(name, value)

    def on_headers_complete(self) -> None:
        try:
            self._head_complete()
        except _Reject as reject:
            # Read back in `data_received`: the parser's error carries the callback's exception as its
            # `__context__`, but raising it replaces that with any exception still marked as handled in the
            # thread, and a compiled coroutine suspended inside an `except` block leaves one there.
            self._refused = reject.status
            raise

    def _head_complete(self) -> None:
        self._in_head = False
        raw_method = self._parsed_method()
        self._head_method = raw_method == b"HEAD"
        raw = self._raw_headers
        if len(raw) > self._max_headers:
            raise _Reject(431)
        if self._head_unchecked:
            # The head came in over several reads, or in one read bigger than the limit; otherwise it cannot
            # exceed the limit and needs no counting.
            self._head_unchecked = False
            size = len(self._url) + sum(map(len, chain.from_iterable(raw))) + 4 * len(raw)
            if size > self._max_header_bytes:
                raise _Reject(431)
        # GET by a comparison: a dictionary lookup would hash the method's bytes, new on every request.
        method = "GET" if raw_method == b"GET" else _METHODS.get(raw_method) or raw_method.decode("ascii")
        if method == "CONNECT":
            raise _Reject(400)  # a reverse proxy has no tunnel to offer
        native = _NATIVE_FIELDS
        if native is not None:
            items = native(raw)
        else:
            items = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in raw]
        target = self._url.decode("latin-1")
        hosts = 0
        connection = False
        for name, _ in items:
            if name == header.HOST:
                hosts += 1
            elif name == header.CONNECTION or name == header.PROXY_CONNECTION:
                connection = True
        keep_alive = self._keeps_alive()
        # llhttp keeps a connection alive without a Connection field (it reads Proxy-Connection as one)
        # only for a version with a major and a minor above 0, and of the versions it accepts that is
        # HTTP/1.1 alone: the usual request is known to be 1.1 without asking for the version, a string
        # llhttp's binding formats anew each time.
        version = "1.1" if keep_alive and not connection else self._parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise _Reject(400)
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            raise _Reject(400)  # RFC 9112 section 3.2: exactly one Host in HTTP/1.1, at most one in 1.0
        if not target.startswith("/"):
            target = _origin_form(target, items)
        request = Request(
            method,
            target,
            version,
            Headers._trusted(items),
            self._client,
            keep_alive,
            self._upgrades(),
        )
        if request.upgrade and _upgrade_token(request.headers) == "h2c":
            upgraded = self._upgrade_h2c(request)
            if upgraded is None:
                return  # the switch happens once the parser stops at the upgrade (data_received)
            request = upgraded
        if request.upgrade and any(
            name == header.TRANSFER_ENCODING or (name == header.CONTENT_LENGTH and value.strip("0 "))
            for name, value in request.headers._items
        ):
            raise _Reject(400)  # a body before switching protocols cannot be framed either way
        ex = Exchange(self, request)
        self._parsing = ex
        queue = self._queue
        self._enqueue(ex)
        self._deadline = None  # the handler's time is the handler's business
        if len(queue) == 1:
            if self._fast is not None:
                self._undispatched = ex  # after this read: only then is it known whether the body came too
            else:
                self._dispatch(ex, fast=False)
        else:
            self.pause(wire.PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        ex = self._parsing
        if ex is None:
            return
        ex.body_received(body)

    def on_message_complete(self) -> None:
        ex = self._parsing
        if ex is None or self._raw_body_left:
            return  # a declined upgrade's body: the parser has not seen it (`_raw_body` ends it)
        ex.body_ended()

    # -- exchanges ----------------------------------------------------------------------------------------

    def _dispatch_parsed(self, *, fast: bool) -> None:
        ex = self._undispatched
        if ex is not None:
            self._undispatched = None
            self._dispatch(ex, fast=fast)

    def _dispatch(self, ex: Exchange, *, fast: bool) -> None:
        """Start the first queued exchange (nothing runs before it): on the fast path when it is `fast`-able,
        arrived whole and the handler takes it; otherwise in the connection's task."""
        if fast and ex.body_complete and self._fast is not None and not self._closed:
            self._running_fast = ex
            try:
                taken = self._fast(ex)
            except Exception:
                self._running_fast = None
                logger.exception("handler failed: %s %s", ex.request.method, ex.request.target)
                if ex.state == NEW:
                    ex.mark_aborted()
                    self._write_error(500, ex.request.method == "HEAD")
                else:
                    self.abort()
                return
            if taken:
                return
            self._running_fast = None
        if not self._wake_task() and self._task is None:
            self._task = self.loop.create_task(self._serve())

    def _wake_task(self) -> bool:
        """Wake the connection's task if it waits for a request (True), to run the first queued exchange or,
        with none queued or the connection closed, to end."""
        idle = self._idle
        if idle is None:
            return False
        self._idle = None
        if not idle.done():  # (cancelled with its task by `_reject`)
            idle.set_result(None)
        return True

    def fast_finished(self, ex: Exchange) -> None:
        """The fast path finished `ex` (`Exchange.finished`): go on to the next request, if one is queued."""
        if self._running_fast is not ex:
            return  # the connection was lost meanwhile
        self._running_fast = None
        if self._finish_exchange(ex, _OK) and self._queue:
            self._dispatch(self._queue[0], fast=True)

    async def _serve(self) -> None:
        """The connection's task: each queued exchange in turn, then a wait for the next request.

        A handler failure never takes the connection down. One coroutine for the whole loop (the handler
        runs directly inside it): every resumption of a handler passes through each coroutine above it.
        """
        handler = self._handler
        queue = self._queue
        try:
            while True:
                ex: Exchange | None = queue[0]
                assert ex is not None
                try:
                    await handler(ex)
                except asyncio.CancelledError:
                    self._finish_exchange(ex, _CANCELLED)
                    raise
                except Exception as exc:
                    status = status_for(exc)
                    if ex.state != NEW:
                        logger.debug("handler failed after the response started", exc_info=True)
                    elif status == 500:
                        logger.exception("handler failed: %s %s", ex.request.method, ex.request.target)
                    else:
                        logger.warning(
                            "handler left an upstream failure unanswered: %s %s: %s",
                            ex.request.method,
                            ex.request.target,
                            exc,
                        )
                    go_on = self._finish_exchange(ex, _FAILED, status)
                else:
                    go_on = self._finish_exchange(ex, _OK)
                if not go_on:
                    return
                ex = None  # not kept alive while the connection waits
                if not queue:
                    idle = self._idle = self.loop.create_future()
                    await idle  # resolved by the next request's head, or by the connection's loss
                    if not queue or self._closed:
                        return  # (lost while the fast path had the exchange queued: it ends it)
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    def _finish_exchange(self, ex: Exchange, outcome: int, status: int = 500) -> bool:
        """After a handler: close, or go on to the next request (pipelined or yet to come): True then."""
        queue = self._queue
        if (
            ex.state == DONE
            and ex.keep
            and ex.body_complete
            and len(queue) == 1
            and not self._closed
            and not self.draining
            and not self._error_status
        ):
            # The usual case: a complete response, nothing pipelined behind it; wait for the next request.
            self._dequeue()
            self._parsing = None
            if self._paused:
                self.resume(wire.PAUSE_PIPELINE)
            if self._in_head:
                self._deadline = self._head_started + self._header_read_timeout
            else:
                self._deadline = self._clock() + self._keep_alive_timeout
            if self._timer is None:
                self._set_deadline(self._deadline)
            return True
        if self._closed or ex.body_failed:
            return False  # connection lost, or already answered by `_reject`
        state = ex.state
        if state in (STARTED, ABORTED):
            self.abort()  # an incomplete response must never look complete
            return False
        if state == NEW:
            if outcome == _CANCELLED:
                self.abort()
            else:
                if outcome == _OK:
                    logger.error(
                        "handler returned without responding: %s %s", ex.request.method, ex.request.target
                    )
                self._write_error(status, ex.request.method == "HEAD")
            return False
        if not ex.keep or not ex.body_complete or self.draining:
            self._close(linger=not ex.body_complete and not self._upgraded)
            return False
        self._dequeue()
        if self._error_status:
            if not (queue and queue[0].body_complete):
                self._write_error(self._error_status, self._head_method)
                return False
            # Complete requests pipelined before the bad one are answered first: the error is the bad one's.
            # Reading goes on as without the error (what arrives is dropped), so a client that leaves is seen.
            self.resume(wire.PAUSE_STOP)
        if queue:
            if len(queue) == 1:
                self.resume(wire.PAUSE_PIPELINE)
            return True
        self._parsing = None
        if self._paused:
            self.resume(wire.PAUSE_PIPELINE)
        if self._in_head:
            self._deadline = self._head_started + self._header_read_timeout
        else:
            self._deadline = self._clock() + self._limits.keep_alive_timeout
        if self._timer is None:
            self._set_deadline(self._deadline)
        return True

    def _raw_received(self, data: bytes) -> None:
        """Bytes after an upgrade request: held until the upstream agrees to switch, then relayed."""
        ex = self._parsing
        if ex is None:
            return
        ex.raw_received(data)

    def _reject(self, status: int) -> None:
        """A protocol error: answer once the exchanges before it are done, then close."""
        self._stopped = True
        self.pause(wire.PAUSE_STOP)
        self._error_status = status
        queue = self._queue
        if not queue:
            self._write_error(status, self._head_method)
            return
        running = queue[0]
        if running is self._parsing and not running.body_complete:
            # The running request's own body is malformed: it can never be relayed whole. Stop its handler
            # (which may not even have started) and answer here.
            running.body_malformed()
            task, self._task = self._task, None
            if task is not None:
                self._idle = None  # a task waiting for this request ends with it (it never got it)
                task.cancel()
            if running.state == NEW:
                running.mark_aborted()
                self._write_error(status, self._head_method)
            else:
                self.abort()

    def _write_error(self, status: int, head: bool) -> None:
        """Answer `status` and close; `head`: the request answered is a HEAD, so the body is left out."""
        if self._closed or self.transport is None:
            return
        body = wire.REASONS.get(status, b"error") + b"\n"
        self.write(
            wire.status_line(status)
            + b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
            + (b"" if head else body)
        )
        self._close(linger=True)

    # -- transport helpers --------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def writelines(self, data: Iterable[bytes]) -> None:
        if self.transport is not None:
            self.transport.writelines(data)

    async def drain(self) -> None:
        """Wait until the client's write buffer is below its high-water mark (or the client is gone)."""
        if not self.write_paused or self._closed:
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def abort(self) -> None:
        self._stopped = True
        if self.transport is not None:
            self.transport.abort()

    def close_transport(self) -> None:
        self._stopped = True
        if self.transport is not None:
            self.transport.close()

    def _close(self, *, linger: bool) -> None:
        """Close after the response; with `linger`, half-close first and drop what the client still sends."""
        self._stopped = True
        self._deadline = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if linger and transport.can_write_eof():
            transport.write_eof()
            if self._paused:
                self._paused = 0
                transport.resume_reading()
            self._linger = self.loop.call_later(_LINGER, transport.close)
        else:
            transport.close()

    def start_drain(self) -> None:
        """Finish the current exchange (if any) and close instead of waiting for another request."""
        self.draining = True
        if not self._queue and not self._in_head:
            self._close(linger=False)

    # -- timeouts -----------------------------------------------------------------------------------------

    def _set_deadline(self, deadline: float) -> None:
        """Close the connection at `deadline` unless it changes first.

        The timer is armed at most `_timer_step` ahead and re-armed when it fires early, so moving the
        deadline on every request costs an assignment, not a timer.
        """
        self._deadline = deadline
        if self._timer is None:
            at = min(deadline, self._clock() + self._timer_step)
            self._timer = self.loop.call_at(at, self._on_deadline)

    def _on_deadline(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self._closed:
            return
        now = self._clock()
        if now < deadline:
            self._timer = self.loop.call_at(min(deadline, now + self._timer_step), self._on_deadline)
            return
        # A request head took too long (slowloris) or the connection sat idle: close without a word.
        self._deadline = None
        self._stopped = True
        if self.transport is not None:
            self.transport.close()


class Drainable(Protocol):
    """A client connection as its server sees it (HTTP/1.1 or HTTP/2)."""

    def start_drain(self) -> None: ...

    def abort(self) -> None: ...


class Connections:
    """The open connections of one server, so that `drain` can wind them down and wait for them."""

    __slots__ = ("emptied", "members")

    def __init__(self) -> None:
        self.members: set[Drainable] = set()
        self.emptied: asyncio.Event | None = None

    def add(self, conn: Drainable) -> None:
        self.members.add(conn)

    def discard(self, conn: Drainable) -> None:
        self.members.discard(conn)
        if not self.members and self.emptied is not None:
            self.emptied.set()
