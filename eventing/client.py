"""A lean HTTP/1.1 client for the one request a Trigger makes, a POST of an event: keep-alive connections
pooled per address, responses parsed with httptools (the llhttp parser of the forwarding engine), no task
per request. A delivery costs a fraction of what aiohttp's client takes; `https://` subscribers still go
through aiohttp (`eventing.delivery`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, cast
from urllib.parse import urlsplit

import httptools

MAX_RESPONSE_BYTES: Final = 4 << 20
"""Largest response body read from a subscriber (a reply event is at most 1 MiB); more fails the attempt."""
MAX_IDLE: Final = 256
"""Idle keep-alive connections kept per address: as many as a Trigger's deliveries in flight, with room."""


class ClientError(Exception):
    """The exchange failed: no connection, the connection closed before a whole response, a malformed or
    oversized response. (Not an `OSError`: a compiled class cannot subclass it.)"""


@dataclass(frozen=True, slots=True)
class Target:
    """Where one subscriber URL's requests go: the address to connect to, and the Host and path they carry."""

    host: str
    port: int
    authority: str
    path: str

    @classmethod
    def parse(cls, url: str, aliases: Mapping[str, tuple[str, int]] | None = None) -> Target | None:
        """`url` as a target, or None for what this client does not speak (https, a URL with credentials).
        `localhost` and `*.localhost` connect to 127.0.0.1, as curl and browsers treat them; a URL whose
        `host[:port]` is in `aliases` connects to the (address, port) there, keeping its Host."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.username or parts.password:
            return None
        try:
            port = parts.port or 80
        except ValueError:
            return None
        host = parts.hostname
        alias = aliases.get(parts.netloc.lower()) if aliases else None
        if alias is not None:
            host, port = alias
        elif host == "localhost" or host.endswith(".localhost"):
            host = "127.0.0.1"
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(host, port, parts.netloc, path)


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]
    """Names lower-cased; a repeated header keeps its last value."""
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self.received = False
        """Whether any byte of the current response arrived (a request on a stale connection did not)."""
        self._head_done = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ClientError(f"malformed response: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        delimited = "content-length" not in self._headers and "transfer-encoding" not in self._headers
        if exc is None and self._head_done and delimited and waiter is not None and not waiter.done():
            # A body delimited by the close of the connection (HTTP/1.0 style) ends here.
            waiter.set_result(Response(self._parser.get_status_code(), self._headers, b"".join(self._body)))
            return
        why = f": {exc}" if exc else ""
        self._fail(ClientError(f"the connection closed before a whole response{why}"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_RESPONSE_BYTES:
            self._fail(ClientError(f"the response is larger than {MAX_RESPONSE_BYTES} bytes"))
            self.abort()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        status = self._parser.get_status_code()
        if not self._parser.should_keep_alive():
            self.closed = True
        waiter.set_result(Response(status, self._headers, b"".join(self._body)))

    def _fail(self, error: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _expire(self) -> None:
        """The request's deadline passed without a whole response: the connection's state is unknown."""
        self._timer = None
        self._fail(TimeoutError())
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def request(self, data: bytes, deadline: float | None = None) -> asyncio.Future[Response]:
        """Send one request; the future has its response, or fails (`TimeoutError` at `deadline`, a time of
        the event loop's clock)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        self._headers = {}
        self._body = []
        self._size = 0
        self.received = False
        self._head_done = False
        if deadline is not None:
            self._timer = loop.call_at(deadline, self._expire)
            waiter.add_done_callback(self._settled)
        self.transport.write(data)
        return waiter

    def _settled(self, _: asyncio.Future[Response]) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Client:
    """Pools of keep-alive connections per (host, port). Not thread-safe; one event loop."""

    def __init__(self, max_idle: int = MAX_IDLE) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._max_idle = max_idle

    async def post(
        self,
        target: Target,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        *,
        timeout: float | None = None,  # noqa: ASYNC109  # a timer per request costs less than asyncio.timeout
    ) -> Response:
        """One POST; raises `ClientError` when no whole response came, `TimeoutError` when none
        came within `timeout` seconds (connecting included). A request that found its reused connection
        closed before any response byte is sent once more on a new connection (the server closed an idle
        keep-alive connection as it went out: it never saw the request)."""
        lines = [f"{name}: {value}\r\n" for name, value in headers]
        fields = "".join(lines)
        # Counted over the whole block: a CR or LF beyond the one pair that ends each line, a NUL, or a line
        # with no name would let a value split the head.
        count = len(lines)
        if (
            fields.count("\n") != count
            or fields.count("\r") != count
            or "\0" in fields
            or fields.startswith(":")
            or "\n:" in fields
        ):
            raise ValueError("a header cannot be sent: a name or value with CR, LF or NUL, or an empty name")
        start = f"POST {target.path} HTTP/1.1\r\nHost: {target.authority}\r\nContent-Length: {len(body)}\r\n"
        data = (start + fields + "\r\n").encode("latin-1") + body
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        conn = self._idle_connection(target)
        reused = conn is not None
        if conn is None:
            conn = await self._connect(target, deadline)
        response: Response | None = None
        try:
            response = await conn.request(data, deadline)
        except ClientError:
            conn.abort()
            if not reused or conn.received:
                raise
        except BaseException:  # cancelled (a timeout): the connection is in an unknown state
            conn.abort()
            raise
        if response is None:  # sent again outside the except block (compiled: see setup.py)
            conn = await self._connect(target, deadline)
            try:
                response = await conn.request(data, deadline)
            except BaseException:
                conn.abort()
                raise
        self._release(target, conn)
        return response

    def _idle_connection(self, target: Target) -> _Connection | None:
        idle = self._idle.get((target.host, target.port))
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def _connect(self, target: Target, deadline: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await loop.create_connection(_Connection, target.host, target.port)
        except TimeoutError:
            raise
        except OSError as exc:
            raise ClientError(f"cannot connect to {target.host}:{target.port}: {exc}") from exc
        return conn

    def _release(self, target: Target, conn: _Connection) -> None:
        if conn.closed:
            conn.abort()
            return
        idle = self._idle.setdefault((target.host, target.port), [])
        if len(idle) >= self._max_idle:
            conn.abort()
            return
        idle.append(conn)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()
