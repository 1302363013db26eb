"""Forwarding across protocols: HTTP/2 to HTTP/2, HTTP/1.1 to HTTP/2 and HTTP/2 to HTTP/1.1.

`H2Exchange.forward` and `Exchange.forward` (given an `H2UpstreamPool`) come here. Each runs in the handler's
task: the request body is pumped by a child task while the response is relayed, so a bidirectional stream
(gRPC) flows both ways at once. Response trailers (where gRPC keeps its status) are carried HTTP/2 to HTTP/2;
an HTTP/1.1 side drops them, as the HTTP/1.1 engine does. Errors are the engine's: `UpstreamConnectError`
when nothing reached the upstream, `UpstreamError`, `ResponseStartTimeout`, `IdleTimeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import h2.errors
import httptools

from serving import header
from serving.http import wire
from serving.http.error import IdleTimeout, ResponseStartTimeout, UpstreamConnectError, UpstreamError
from serving.http.h2base import CONNECTION_SPECIFIC, Inbound, StreamReset
from serving.http.h2upstream import H2UpstreamPool
from serving.http.message import Headers, Request, connection_tokens
from serving.http.state import ABORTED
from serving.http.upstream import ForwardTimeouts

if TYPE_CHECKING:
    from serving.http.exchange import Exchange
    from serving.http.h2server import H2Exchange
    from serving.http.h2upstream import UpstreamStream
    from serving.http.pool import UpstreamPool

logger = logging.getLogger(__name__)

# Request headers never sent to the next hop (hop-by-hop, and Host, which HTTP/2 carries as :authority).
_NOT_FORWARDED: Final = header.HOP_BY_HOP | {"expect", "http2-settings"}
_REFUSED: Final = header.APP_REFUSED.encode()
_READ: Final = 64 * 1024


class _ClientGone(Exception):
    """The client's stream or connection ended while the response was being relayed."""


def end_to_end(headers: Headers) -> list[tuple[str, str]]:
    """The end-to-end headers of a request as the next hop gets them (Connection's tokens honoured, except
    for those a proxy never lets a client name away)."""
    items = headers._items
    out = [(n, v) for n, v in items if n not in _NOT_FORWARDED]
    if len(out) != len(items):
        tokens = connection_tokens([v for n, v in items if n == header.CONNECTION])
        tokens = {t for t in tokens if not header.is_protected(t)}
        if tokens:
            out = [(n, v) for n, v in out if n not in tokens]
    return out


def request_fields(request: Request, headers: Headers, default_authority: str) -> list[tuple[bytes, bytes]]:
    """The HEADERS of a request forwarded over HTTP/2."""
    authority = headers.get(header.HOST) or default_authority
    fields = [
        (b":method", request.method.encode("ascii")),
        (b":scheme", b"http"),
        (b":authority", authority.encode("latin-1")),
        (b":path", request.target.encode("latin-1")),
    ]
    for name, value in end_to_end(headers):
        if name == header.HOST:
            continue
        fields.append((name.encode("latin-1"), value.encode("latin-1")))
    if asks_trailers(headers):
        fields.append((b"te", b"trailers"))  # the one TE HTTP/2 allows; gRPC requires it
    return fields


def asks_trailers(headers: Headers) -> bool:
    """`TE: trailers` (hop-by-hop, yet the one TE HTTP/2 carries end to end: gRPC requires it)."""
    te = headers.get("te")
    return te is not None and "trailers" in te.lower()


def _response_fields(
    head: list[tuple[bytes, bytes]], extra: Iterable[tuple[str, str]], *, keep_refused: bool = False
) -> tuple[int, list[tuple[bytes, bytes]]]:
    status = 0
    out: list[tuple[bytes, bytes]] = []
    for name, value in head:
        if name == b":status":
            status = int(value)
            out.insert(0, (name, value))
        elif name in CONNECTION_SPECIFIC or (name == _REFUSED and not keep_refused):
            continue
        elif name[:1] != b":":
            out.append((name, value))
    out += [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in extra]
    return status, out


async def _read(body: Inbound, idle: float | None) -> bytes | None:
    if idle is None:
        return await body.read()
    try:
        async with asyncio.timeout(idle):
            return await body.read()
    except TimeoutError:
        raise IdleTimeout(f"nothing from the upstream for {idle}s") from None


async def _head(stream: UpstreamStream, limit: float | None) -> list[tuple[bytes, bytes]]:
    if limit is None:
        return await asyncio.shield(stream.head)
    try:
        async with asyncio.timeout(limit):
            return await asyncio.shield(stream.head)
    except TimeoutError:
        raise ResponseStartTimeout(f"no response from the upstream within {limit}s") from None


def _settle(stream: UpstreamStream, pump: asyncio.Task[None] | None, finished: bool) -> None:
    """After a forward: a stream whose both directions ended is done; any other is reset (and its request
    body pump stopped), so the upstream stops working for nobody."""
    if pump is not None and not pump.done():
        pump.cancel()
        finished = False
    if finished:
        stream.conn.stream_done(stream.stream_id)
    else:
        stream.reset()


def _head_failed(exc: StreamReset, sent_body: bool) -> Exception:
    """The upstream reset the stream before its response: refused and nothing of a body sent means nothing
    was processed (another pod may take it)."""
    if exc.refused and not sent_body:
        return UpstreamConnectError(str(exc))
    return UpstreamError(str(exc), response_started=False)


# -- HTTP/2 client ----------------------------------------------------------------------------------------


async def forward_from_h2(
    ex: H2Exchange,
    pool: UpstreamPool | H2UpstreamPool,
    headers: Headers,
    *,
    timeouts: ForwardTimeouts,
    response_headers: Iterable[tuple[str, str]],
    retry_refused: bool,
) -> int:
    from serving.http.h2upstream import H2UpstreamPool  # it imports this module

    if isinstance(pool, H2UpstreamPool):
        return await _h2_to_h2(ex, pool, headers, timeouts, response_headers, retry_refused)
    return await _h2_to_h1(ex, pool, headers, timeouts, response_headers)


async def _pump_h2(body: Inbound, stream: UpstreamStream) -> None:
    """The client's request body (and trailers) to the upstream stream, as both windows allow."""
    try:
        while (data := await body.read()) is not None:
            await stream.send(data)
        if body.trailers:
            stream.conn.h2.send_headers(stream.stream_id, body.trailers, end_stream=True)
        else:
            await stream.send(b"", end_stream=True)
    except StreamReset:
        return  # either side ended the stream; the response side sees it too


async def _h2_to_h2(
    ex: H2Exchange,
    pool: H2UpstreamPool,
    headers: Headers,
    timeouts: ForwardTimeouts,
    extra: Iterable[tuple[str, str]],
    retry_refused: bool,
) -> int:
    fields = request_fields(ex.request, headers, pool.address)
    body = ex.body
    bodyless = body.ended and not body.pending and not body.trailers
    conn = await pool.acquire(timeouts.connect)
    try:
        stream = conn.open_stream(fields, end_stream=bodyless)
    except StreamReset as exc:
        raise UpstreamConnectError(f"{pool.address}: {exc}") from None
    pump = None if bodyless else asyncio.get_running_loop().create_task(_pump_h2(body, stream))
    client = ex.transport
    finished = False
    status = 0
    try:
        try:
            head = await _head(stream, timeouts.response_start)
        except StreamReset as exc:
            raise _head_failed(exc, not bodyless) from None
        status, out = _response_fields(head, extra, keep_refused=not retry_refused)
        if retry_refused and status == 502 and bodyless and any(n == _REFUSED for n, _ in head):
            raise UpstreamConnectError(f"{pool.address}: the app refused the connection")
        upstream = stream.body
        ended = upstream.ended and not upstream.pending and not upstream.trailers
        ex.mark_started()
        try:
            client.send_headers(ex.stream_id, out, end_stream=ended)
            if not ended:
                while True:
                    try:
                        data = await _read(upstream, timeouts.idle)
                    except StreamReset as exc:
                        ex.abort(exc.code if exc.code else h2.errors.ErrorCodes.INTERNAL_ERROR)
                        raise UpstreamError(str(exc), response_started=True) from None
                    if data is None:
                        break
                    await client.send_data(ex.stream_id, data)
                if upstream.trailers:
                    client.send_headers(ex.stream_id, upstream.trailers, end_stream=True)
                else:
                    await client.send_data(ex.stream_id, b"", end_stream=True)
        except StreamReset:
            ex._state = ABORTED  # the client went away: nothing more to tell it
            return status
        ex.mark_done()
        finished = upstream.ended
        return status
    finally:
        _settle(stream, pump, finished)


async def _h2_to_h1(
    ex: H2Exchange,
    pool: UpstreamPool,
    headers: Headers,
    timeouts: ForwardTimeouts,
    extra: Iterable[tuple[str, str]],
) -> int:
    """An HTTP/2 request to an HTTP/1.1 upstream, over a kept-alive connection of the pool's when one is idle.

    A reused connection that the upstream closed meanwhile (nothing came back) is replaced by a new one for
    a request without a body; a request whose body was being sent cannot be sent again."""
    request = ex.request
    body = ex.body
    bodyless = body.ended and not body.pending
    lines = [f"{request.method} {request.target} HTTP/1.1\r\n"]
    host = headers.get(header.HOST) or pool.address
    lines.append(f"host: {host}\r\n")
    length = headers.get(header.CONTENT_LENGTH)
    for name, value in end_to_end(headers):
        if name not in (header.HOST, header.CONTENT_LENGTH):
            lines.append(f"{name}: {value}\r\n")
    chunked = not bodyless and length is None
    if chunked:
        lines.append("transfer-encoding: chunked\r\n")
    elif length is not None:
        lines.append(f"content-length: {length}\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode("latin-1")
    loop = asyncio.get_running_loop()
    fresh = False  # after a kept connection failed: a new one, never another kept one (one retry at most)
    while True:
        kept = None if fresh else pool.take_stream(loop)
        if kept is None:
            try:
                async with asyncio.timeout(timeouts.connect):
                    reader, writer = await asyncio.open_connection(pool.host, pool.port)
            except OSError as exc:
                raise UpstreamConnectError(f"cannot connect to {pool.address}: {exc or 'timed out'}") from exc
            wire.set_nodelay(writer.get_extra_info("socket"))
        else:
            reader, writer = kept
        pump: asyncio.Task[bool] | None = None
        keep = False
        try:
            writer.write(head)
            if not bodyless:
                pump = loop.create_task(_pump_h1(body, writer, chunked))
            status, keep = await _relay_h1_response(ex, reader, timeouts, extra, request.method == "HEAD")
            if pump is not None:
                keep = keep and pump.done() and not pump.cancelled() and pump.result()
            return status
        except UpstreamError as exc:
            if kept is None or not bodyless or exc.response_started or ex.response_started:
                raise
            # The kept connection was closed by the upstream while idle: once more on a new one.
            fresh = True
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
            if keep:
                pool.release_stream(reader, writer, loop)
            else:
                writer.transport.abort()


async def _pump_h1(body: Inbound, writer: asyncio.StreamWriter, chunked: bool) -> bool:
    """The client's request body to the upstream connection; True when all of it was sent."""
    try:
        while (data := await body.read()) is not None:
            if chunked:
                writer.writelines(wire.chunk(data))
            else:
                writer.write(data)
            await writer.drain()
        if chunked:
            writer.write(b"0\r\n\r\n")
    except (StreamReset, ConnectionError):
        return False
    return True


class _Response:
    """httptools callbacks for one HTTP/1.1 response."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.chunks: list[bytes] = []
        self.parser: httptools.HttpResponseParser | None = None
        self.final = False
        self.keep_alive = False
        self.trailing = False
        """Another message began after the final response: the connection cannot be trusted with more."""
        self.code = 0

    def on_message_begin(self) -> None:
        if self.final:
            self.trailing = True  # whatever follows the final response is nobody's answer: ignored
            return
        self.headers = []
        self.head_done = False
        self.complete = False  # an interim response before this one was complete, not this one

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_done and not self.trailing:
            self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self.trailing or self.parser is None:
            return
        self.head_done = True
        self.code = self.parser.get_status_code()
        if self.code >= 200:
            self.final = True

    def on_body(self, data: bytes) -> None:
        if not self.trailing:
            self.chunks.append(data)

    def on_message_complete(self) -> None:
        if self.trailing:
            return
        self.complete = True
        # Asked here: once the parser returns, it has reset and no longer knows.
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()

    def reusable(self) -> bool:
        return self.complete and self.final and not self.trailing and self.keep_alive


async def _relay_h1_response(
    ex: H2Exchange,
    reader: asyncio.StreamReader,
    timeouts: ForwardTimeouts,
    extra: Iterable[tuple[str, str]],
    head_request: bool,
) -> tuple[int, bool]:
    """Relay the response; return its status and whether the connection can carry another request (the
    response was complete and framed, the upstream keeps the connection, nothing came after it)."""
    response = _Response()
    parser = httptools.HttpResponseParser(response)
    response.parser = parser
    status = 0
    limit = timeouts.response_start
    client = ex.transport
    while True:
        try:
            async with asyncio.timeout(limit if not status else timeouts.idle):
                data = await reader.read(_READ)
        except TimeoutError:
            if not status:
                raise ResponseStartTimeout(f"no response from the upstream within {limit}s") from None
            raise IdleTimeout(f"nothing from the upstream for {timeouts.idle}s") from None
        except ConnectionError as exc:
            data = b""
            if status:
                ex.abort()
                raise UpstreamError(f"upstream connection failed: {exc}", response_started=True) from None
        if not data:
            if status and response.head_done and not _framed(response.headers):
                response.complete = True  # a close-delimited body ends here
            elif status and not response.complete:
                ex.abort()
                raise UpstreamError("the upstream closed mid-response", response_started=True)
            elif not status:
                raise UpstreamError("the upstream closed without a response", response_started=False)
        else:
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                if status:
                    ex.abort()
                    raise UpstreamError(
                        f"malformed upstream response: {exc}", response_started=True
                    ) from None
                raise UpstreamError(f"malformed upstream response: {exc}", response_started=False) from None
        if not status and response.head_done:
            code = response.code
            if code < 200:
                response.head_done = False  # an interim response: wait for the final one
                response.complete = False
                continue
            status = code
            fields = [(b":status", str(code).encode())]
            fields += [(n, v) for n, v in response.headers if n not in CONNECTION_SPECIFIC]
            fields += [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in extra]
            bodyless = head_request or code in (204, 304)
            ex.mark_started()
            try:
                client.send_headers(ex.stream_id, fields, end_stream=bodyless)
            except StreamReset:
                ex._state = ABORTED
                return status, False
            if bodyless:
                ex.mark_done()
                return status, response.reusable()
        if status:
            chunks, response.chunks = response.chunks, []
            try:
                for chunk in chunks:
                    await client.send_data(ex.stream_id, chunk)
                if response.complete:
                    await client.send_data(ex.stream_id, b"", end_stream=True)
                    ex.mark_done()
                    return status, response.reusable()
            except StreamReset:
                ex._state = ABORTED
                return status, False


def _framed(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(n in (b"content-length", b"transfer-encoding") for n, _ in headers)


# -- HTTP/1.1 client, HTTP/2 upstream ------------------------------------------------------------------------


async def forward_h1_to_h2(
    ex: Exchange,
    pool: H2UpstreamPool,
    headers: Headers,
    *,
    timeouts: ForwardTimeouts,
    response_headers: Iterable[tuple[str, str]],
    retry_refused: bool,
) -> int:
    request = ex.request
    if request.upgrade:
        raise UpstreamError(
            "a protocol upgrade cannot be forwarded to an HTTP/2 upstream", response_started=False
        )
    ex.begin_forward()
    has_body = ex.has_body
    fields = request_fields(request, headers, pool.address)
    conn = await pool.acquire(timeouts.connect)
    try:
        stream = conn.open_stream(fields, end_stream=not has_body)
    except StreamReset as exc:
        raise UpstreamConnectError(f"{pool.address}: {exc}") from None
    pump = asyncio.get_running_loop().create_task(_pump_from_h1(ex, stream)) if has_body else None
    client = ex.connection
    finished = False
    status = 0
    try:
        try:
            head = await _head(stream, timeouts.response_start)
        except StreamReset as exc:
            raise _head_failed(exc, has_body) from None
        status, out = _response_fields(head, (), keep_refused=not retry_refused)
        if retry_refused and status == 502 and not has_body and any(n == _REFUSED for n, _ in head):
            raise UpstreamConnectError(f"{pool.address}: the app refused the connection")
        bodyless = request.method == "HEAD" or status in (204, 304)
        length = any(n == b"content-length" for n, _ in out)
        chunked = not bodyless and not length and request.version == "1.1"
        keep = ex.decide_keep(not bodyless and not length and not chunked)
        parts = [wire.status_line(status)]
        parts += [b"%s: %s\r\n" % (n, v) for n, v in out[1:]]
        if response_headers:
            parts.append(wire.encode_headers(response_headers))
        if chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        if request.version == "1.1":
            if not keep:
                parts.append(b"connection: close\r\n")
        elif keep:
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        ex.mark_started()
        client.write(b"".join(parts))
        upstream = stream.body
        if not bodyless:
            while True:
                try:
                    data = await _read(upstream, timeouts.idle)
                except StreamReset as exc:
                    ex.mark_aborted()
                    raise UpstreamError(str(exc), response_started=True) from None
                except IdleTimeout:
                    ex.mark_aborted()
                    raise
                if data is None:
                    break
                if data:
                    client.writelines(wire.chunk(data) if chunked else (data,))
                    await client.drain()
            if chunked:
                client.write(b"0\r\n\r\n")
        ex.mark_done()
        finished = upstream.ended
        await client.drain()
        return status
    finally:
        _settle(stream, pump, finished)


async def _pump_from_h1(ex: Exchange, stream: UpstreamStream) -> None:
    """An HTTP/1.1 request body to an HTTP/2 stream: the client connection stops being read while the
    stream's window is closed (at most the engine's high-water mark is held here)."""
    client = ex.connection
    if ex.expects_continue and not ex.body_complete:
        client.write(wire.CONTINUE)
    queue: deque[bytes] = deque(ex.take_body())
    held = sum(map(len, queue))
    wake: asyncio.Future[None] | None = None
    ended = ex.body_complete

    def sink(data: bytes) -> None:
        nonlocal held, wake
        queue.append(data)
        held += len(data)
        if held > wire.BODY_HIGH_WATER:
            client.pause(wire.PAUSE_BODY)
        if wake is not None and not wake.done():
            wake.set_result(None)

    def end() -> None:
        nonlocal ended, wake
        ended = True
        if wake is not None and not wake.done():
            wake.set_result(None)

    if not ended:
        ex.stream_body(sink, end)
    try:
        while True:
            while queue:
                data = queue.popleft()
                held -= len(data)
                if held <= wire.BODY_HIGH_WATER // 2:
                    client.resume(wire.PAUSE_BODY)
                await stream.send(data)
            if ended:
                trailers = [(n.lower(), v) for n, v in ex.trailers]
                if trailers:
                    stream.conn.h2.send_headers(stream.stream_id, trailers, end_stream=True)
                else:
                    await stream.send(b"", end_stream=True)
                return
            wake = asyncio.get_running_loop().create_future()
            await wake
            wake = None
    except StreamReset:
        ex.discard_body()
    finally:
        with contextlib.suppress(Exception):
            client.resume(wire.PAUSE_BODY)
