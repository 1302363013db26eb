"""One keep-alive connection to an upstream, and the relay of one response at a time from it to a client.

Each upstream connection is an asyncio Protocol with its own llhttp response parser. While it serves an
exchange its parser callbacks write the response straight into the client transport: bytes produced during one
`data_received` go out in a single write, and flow control is done by pausing whichever side reads faster than
the other side's socket drains. No task, future or await is created per chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, cast

import httptools

from serving.http import framing, relay, wire
from serving.http.error import IdleTimeout, ResponseStartTimeout, UpstreamConnectError, UpstreamError
from serving.http.framing import CHUNKED, LENGTH, NO_BODY, UNTIL_CLOSE
from serving.http.state import DONE, NEW

if TYPE_CHECKING:
    from serving.http.connection import ServerConnection
    from serving.http.exchange import Exchange
    from serving.http.pool import UpstreamPool

_CLOSE: Final = b"connection: close\r\n"
_KEEP_ALIVE: Final = b"connection: keep-alive\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"

# Largest upstream response head accepted (llhttp itself sets no limit); four times the request-head limit.
_MAX_HEAD: Final = 256 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardTimeouts:
    """Time limits on one forwarded request; the total request time is the handler's own business."""

    connect: float = 5.0
    """Seconds to establish a new upstream connection (pooled ones are reused at once)."""
    response_start: float | None = None
    """Seconds from sending the request head to receiving the response head; None: no limit."""
    idle: float | None = None
    """Seconds without reading anything from the upstream while the response is relayed; None: no limit."""


class StaleConnection(UpstreamError):
    """A pooled connection turned out closed before any response byte came back; safe to retry once."""


class Completion:
    """Told how a forwarded exchange ended: the upstream status once the response was relayed whole, or the
    error that ended it. `Awaited` for a handler that awaits the end (`Exchange.forward`); a subclass of its
    own for a handler that forwards from a callback (`Exchange.forward_now`), which no task waits for.

    A class, not a protocol: compiled, telling it is a call through the class's table, where a call on any
    object with these methods is a lookup by name (the end of every request on the fast path)."""

    __slots__ = ()

    def done(self) -> bool:
        raise NotImplementedError

    def set_result(self, result: int, /) -> None:
        raise NotImplementedError

    def set_exception(self, exception: BaseException, /) -> None:
        raise NotImplementedError


class Awaited(Completion):
    """A `Completion` that a task awaits: it passes the end on to a future."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[int]) -> None:
        self.future = future

    def done(self) -> bool:
        return self.future.done()

    def set_result(self, result: int, /) -> None:
        self.future.set_result(result)

    def set_exception(self, exception: BaseException, /) -> None:
        self.future.set_exception(exception)


class UpstreamConnection(wire.ReadPause, asyncio.Protocol):
    """One keep-alive connection to the upstream; serves one exchange at a time, then returns to its pool."""

    def __init__(self, pool: UpstreamPool, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self.loop = loop
        self.clock: Callable[[], float] = loop.time
        """The loop's clock, bound once: compiled code looks a method of the loop up by name on every call."""
        self.transport: asyncio.Transport | None = None
        self._send: Callable[[bytes], None] | None = None  # the transport's `write`, once connected
        self._new_parser()
        self.open = False
        self.reused = False
        self.idle_since = 0.0
        self._paused = 0
        self._ex: Exchange | None = None
        self._client: ServerConnection | None = None
        self._client_send: Callable[[bytes], None] | None = None
        self._done: Completion | None = None
        self.relay: relay.Relay | None = None
        self._out: list[bytes] = []
        self._extra = b""
        # Bytes of the response head(s) received so far (interim heads included; usually one read, not copied)
        # and where the current head starts in them: the head is relayed from these bytes, not rebuilt from
        # per-header callbacks.
        self._pending = b""
        self._app_refused: UpstreamConnectError | None = None
        self._skip = 0
        # Per response.
        self._status = 0
        self._interim = False
        self._complete = False
        self._reset_parser = False
        self._framing = framing.NO_BODY
        self._until_eof = False
        self._keep_alive = False
        self._reusable = True
        self._body_sent = False
        self._head_request = False
        self._timer: asyncio.TimerHandle | None = None
        self._start_deadline: float | None = None
        self._idle: float | None = None
        self._last_read = 0.0
        self._timed = False  # response-start or idle timeouts are being watched

    def _new_parser(self) -> None:
        """A response parser for what the upstream sends from now on, and the methods of it the hot path
        calls, bound once."""
        parser = httptools.HttpResponseParser(self)
        self._feed: Callable[[bytes], None] = parser.feed_data
        self._status_code: Callable[[], int] = parser.get_status_code
        self._keeps_alive: Callable[[], bool] = parser.should_keep_alive

    # -- asyncio.Protocol ---------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The upstream's address, as its pool names it (`host:port`)."""
        return self._pool.address

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._send = self.transport.write
        self.open = True
        wire.set_nodelay(transport.get_extra_info("socket"))

    def data_received(self, data: bytes) -> None:
        if self._ex is None or self.relay is not None:
            if self.relay is not None:
                self.relay.from_upstream(data)
            else:
                self.close()  # bytes on an idle connection: the upstream is confused; never reuse it
            return
        if self._idle is not None:
            self._last_read = self.clock()
        if not self._head_seen:
            pending = self._pending = self._pending + data if self._pending else data
            if len(pending) > _MAX_HEAD:
                self._fail(
                    UpstreamError(
                        f"response head from {self._pool.address} too large", response_started=False
                    )
                )
                return
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade as exc:
            self._flush()
            if self._complete:
                self._finish()  # a 101 after the whole response: dropped, as `on_headers_complete` drops any
                return
            self._start_relay(data[exc.args[0] :])
            return
        except httptools.HttpParserError as exc:
            self._out.clear()
            refused, self._app_refused = self._app_refused, None
            if refused is not None:
                self._fail(refused)
            else:
                self._fail(
                    UpstreamError(
                        f"invalid response from {self._pool.address}: {exc}", response_started=False
                    )
                )
            return
        if self._out:
            self._flush()
        if self._complete:
            self._finish()

    def eof_received(self) -> bool | None:
        if self.relay is not None:
            return self.relay.upstream_eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.relay is not None:
            self.relay.upstream_lost()
            return
        ex = self._ex
        if ex is None:
            self._pool.discard(self)
            return
        if self._until_eof and exc is None and not self._complete:
            # End of a close-delimited body: complete, as the upstream said by closing.
            if self._framing == CHUNKED:
                self._out.append(_LAST_CHUNK)
            self._flush()
            self._reusable = False
            self._finish()
            return
        address = self._pool.address
        if not self._head_seen and not self._pending and self.reused and not ex.has_body:
            self._fail(StaleConnection(f"pooled connection to {address} was closed", response_started=False))
        else:
            self._fail(UpstreamError(f"upstream {address} closed the connection", response_started=False))

    def pause_writing(self) -> None:
        if self._client is not None:
            self._client.pause(wire.PAUSE_PEER)

    def resume_writing(self) -> None:
        if self._client is not None:
            self._client.resume(wire.PAUSE_PEER)

    # -- llhttp callbacks ---------------------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        ex = self._ex
        if ex is None:
            raise UpstreamError("response without request", response_started=False)
        if self._complete:
            # Another response in the read that completed this one: relayed, it would answer the client's next
            # request. It is dropped, and the connection with it.
            self._reusable = False
            return
        status = self._status_code()
        pending, start = self._pending, self._skip
        end, found = framing.scan(pending, start)
        if status < 200:
            if status != 101:
                # Interim responses (100, 103) are not relayed: the engine answers Expect itself.
                self._interim = True
                self._skip = end + 4
                return
            if not ex.request.upgrade:
                raise UpstreamError("101 to a request that did not ask to upgrade", response_started=False)
        raw = pending[start : end + 2]
        if (
            status == 502
            and ex.retry_refused
            and not ex.has_body
            and raw.lower().find(framing.APP_REFUSED) != -1
        ):
            # The upstream's app refused the connection and no request byte reached it: another pod may take
            # the request (the handler decides), so nothing of this response goes to the client.
            refused = UpstreamConnectError(f"the app behind {self._pool.address} refused the connection")
            self._app_refused = refused  # for `data_received`: see `ServerConnection.on_headers_complete`
            raise refused
        self._head_seen = True
        self._status = status
        self._keep_alive = self._keeps_alive()
        self._pending = b""
        self._skip = 0
        self._out.append(self._response_head(ex, status, raw, found))
        ex.mark_started()
        if self._head_request and status != 101:
            # llhttp cannot be told the request was HEAD; the message ends here and the next response needs
            # a fresh parser.
            self._complete = True
            self._reset_parser = True

    def on_body(self, body: bytes) -> None:
        kind = self._framing
        if self._complete:
            self._reusable = False  # bytes after a body-less response: never reuse this connection
        elif kind in (LENGTH, UNTIL_CLOSE):
            self._out.append(body)
        elif kind == CHUNKED and body:
            self._out.extend(wire.chunk(body))

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._framing == framing.UPGRADE or self._complete:
            return
        if self._framing == CHUNKED:
            self._out.append(_LAST_CHUNK)  # response trailers are dropped
        self._complete = True

    # -- forwarding ---------------------------------------------------------------------------------------

    def start(
        self, ex: Exchange, head: bytes, extra: bytes, timeouts: ForwardTimeouts, done: Completion
    ) -> None:
        """Send `ex`'s request (head and whatever body is buffered) and relay its response from now on; `done`
        is told how it ended."""
        transport = self.transport
        assert transport is not None
        client = ex.connection
        self._ex = ex
        self._client = client
        self._client_send = client.send
        self._done = done
        self._extra = extra
        self._head_seen = self._interim = self._complete = self._until_eof = False
        self._reusable = True
        self._head_request = ex.request.method == "HEAD"
        client.write_listener = self
        if client.write_paused:
            self.pause(wire.PAUSE_PEER)
        if not ex.has_body:
            ex.sent_without_body()
            self._body_sent = True
            send = self._send
            assert send is not None
            send(head)
        else:
            self._send_request_body(ex, head, transport)
        if timeouts.response_start is not None or timeouts.idle is not None:
            self._timed = True
            now = self.clock()
            rs = timeouts.response_start
            self._start_deadline = None if rs is None else now + rs
            self._idle = timeouts.idle
            self._last_read = now
            self._arm(now)

    def _send_request_body(self, ex: Exchange, head: bytes, transport: asyncio.Transport) -> None:
        """Send the head and the buffered body; have the client connection stream the rest straight here."""
        if ex.expects_continue and not ex.body_complete:
            ex.connection.write(wire.CONTINUE)
        chunks = ex.take_body()
        out = [head]
        if ex.chunked:
            for data in chunks:
                out.extend(wire.chunk(data))
            if ex.body_complete:
                out.append(wire.last_chunk(ex.trailers))
            else:
                ex.stream_body(self._send_chunk, self._end_chunked)
        else:
            out += chunks
            if not ex.body_complete:
                ex.stream_body(transport.write, self._end_body)
        self._body_sent = ex.body_complete
        transport.writelines(out)

    def _send_chunk(self, data: bytes) -> None:
        if data and self.transport is not None:
            self.transport.writelines(wire.chunk(data))

    def _end_chunked(self) -> None:
        if self.transport is not None and self._ex is not None:
            self.transport.write(wire.last_chunk(self._ex.trailers))
        self._body_sent = True

    def _end_body(self) -> None:
        self._body_sent = True

    def _response_head(self, ex: Exchange, status: int, raw: bytes, found: int) -> bytes:
        """The response head for the client: relayed as received when it can be, else rebuilt; `found` is
        what `framing.scan` found in it."""
        request = ex.request
        version = request.version
        if (
            found == framing.HEAD_LENGTH  # Content-Length and nothing hop-by-hop
            and status != 101
            and status != 204
            and status != 304
            and not self._head_request
            and raw.startswith(b"HTTP/1.1 ")
        ):
            # The usual response: Content-Length framing, nothing hop-by-hop: relayed as received.
            self._framing = LENGTH
            keep = ex.decide_keep(False)
            tail = self._extra + b"\r\n"
            if version == "1.1":
                return raw + tail if keep else raw + _CLOSE + tail
            return raw + _KEEP_ALIVE + tail if keep else raw + tail
        lower = raw.lower()
        has_length = found & framing.HEAD_LENGTH != 0
        coding = framing.coding(lower)
        if has_length and status != 204 and status != 304 and not self._head_request:
            kind = LENGTH  # the usual case, decided without a call
        else:
            kind = framing.frame(status, self._head_request, has_length, version)
            self._until_eof = kind in (CHUNKED, UNTIL_CLOSE) and not framing.is_chunked(coding)
        self._framing = kind
        keep = ex.decide_keep(kind == UNTIL_CLOSE)
        if framing.relayable(raw, lower, coding) and (coding is None or kind in (CHUNKED, NO_BODY)):
            parts = [raw]
            if self._until_eof and kind == CHUNKED:
                parts.append(b"transfer-encoding: chunked\r\n")
        else:
            parts = framing.rebuilt_head(raw, status, kind, coding)
        if version == "1.1":
            if not keep and status != 101:
                parts.append(_CLOSE)
        elif keep:
            parts.append(_KEEP_ALIVE)
        parts.append(self._extra)
        parts.append(b"\r\n")
        return b"".join(parts)

    def _flush(self) -> None:
        out = self._out
        send = self._client_send
        if out and send is not None:
            send(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _start_relay(self, rest: bytes) -> None:
        """101 relayed: from now on both connections carry raw bytes until either side closes."""
        ex, client, done = self._ex, self._client, self._done
        assert ex is not None
        assert client is not None
        assert done is not None
        assert self.transport is not None
        self._cancel_timer()
        if rest:
            client.write(rest)
        self.relay = relay.Relay(client, self, ex, done)
        client.relay = self.relay
        upstream = self.transport
        held = ex.relay_raw(upstream.write)
        if held:
            upstream.writelines(held)

    def _finish(self) -> None:
        """The response was relayed completely: hand the connection back to the pool (or close it)."""
        ex, done = self._ex, self._done
        assert ex is not None
        assert done is not None
        ex.mark_done()
        if self._reset_parser:
            self._reset_parser = False
            self._new_parser()
        reusable = self._keep_alive and self._reusable and self._body_sent
        self._detach()
        if reusable:
            self._pool.release(self)
        else:
            self.close()
        if not done.done():
            done.set_result(self._status)

    def _fail(self, exc: Exception) -> None:
        """The exchange cannot complete: close this connection; reset the client's if the response started."""
        ex, client, done = self._ex, self._client, self._done
        if ex is None or done is None:
            return
        self._out.clear()
        started = ex.state != NEW
        self._detach()
        self.abort()
        if started and client is not None:
            ex.mark_aborted()
            client.abort()
        if isinstance(exc, UpstreamError):
            exc.response_started = started
        if not done.done():
            done.set_exception(exc)

    def _detach(self) -> None:
        """Unbind from the exchange: the client stops feeding this connection and vice versa."""
        if self._timed:
            self._cancel_timer()
        ex, client = self._ex, self._client
        if ex is not None and not ex.body_complete:
            ex.discard_body()
        if client is not None:
            if client.write_listener is self:
                client.write_listener = None
            if client._paused:
                client.resume(wire.PAUSE_PEER)
        if self._paused:
            self.resume(wire.PAUSE_PEER)
        self._ex = self._client = self._client_send = self._done = None

    def unbind(self) -> None:
        """Forget the exchange after a relay ended (the relay closes this connection)."""
        self._ex = self._client = self._client_send = self._done = None

    def cancel(self, ex: Exchange) -> None:
        """The forwarding task was cancelled: drop the connection, abort a started response."""
        if self.relay is not None:
            self.relay.abort()
            return
        if self._ex is not ex:
            return  # already finished and released, or failed
        client = self._client
        started = ex.state != NEW
        self._detach()
        self.abort()
        if started and client is not None and ex.state != DONE:
            ex.mark_aborted()
            client.abort()

    def client_lost(self) -> None:
        """The client went away mid-exchange: stop at once (the handler task is being cancelled)."""
        if self._ex is not None:
            self._detach()
            self.abort()

    # -- timers and flow control --------------------------------------------------------------------------

    def _arm(self, now: float) -> None:
        at: float | None = None
        if not self._head_seen and self._start_deadline is not None:
            at = self._start_deadline
        if self._idle is not None:
            idle_at = self._last_read + self._idle
            at = idle_at if at is None else min(at, idle_at)
        if at is not None:
            self._timer = self.loop.call_at(max(at, now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._ex is None or self.relay is not None:
            return
        now = self.clock()
        if not self._head_seen and self._start_deadline is not None and now >= self._start_deadline:
            self._fail(ResponseStartTimeout(f"no response from {self._pool.address} in time"))
        elif self._idle is not None and now - self._last_read >= self._idle:
            self._fail(IdleTimeout(f"upstream {self._pool.address} idle for {self._idle}s"))
        else:
            self._arm(now)

    def _cancel_timer(self) -> None:
        self._timed = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._start_deadline = None
        self._idle = None

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.abort()
