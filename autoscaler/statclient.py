"""A lean HTTP/1.1 client for one request shape: `GET /metrics` of a pod's stats port, over keep-alive
connections (one kept idle per pod).

Scraping a thousand pods every second is the autoscaler's hottest loop; a general-purpose client spends
several times the CPU of this one (llhttp parsing on a bare asyncio protocol).
"""

from __future__ import annotations

import asyncio
from typing import Final, cast

import httptools

from serving.stat import PROTOBUF_CONTENT_TYPE, DecodeError, Stat, decode_stat

MAX_BODY: Final = 4096
"""A `Stat` is under 400 bytes; a longer body is not one."""
MAX_IDLE: Final = 8192
"""Idle connections kept at most (one per pod scraped)."""
_CONTENT_TYPE: Final = PROTOBUF_CONTENT_TYPE.encode()


class StatFetchError(Exception):
    """The pod did not answer with a `Stat` (connection, status, content type or body)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; carries one request at a time."""

    __slots__ = (
        "_body",
        "_content_type",
        "_done",
        "_keep_alive",
        "_parser",
        "_pool",
        "_status",
        "_transport",
        "address",
        "closed",
    )

    def __init__(self, pool: StatClient, address: tuple[str, int]) -> None:
        self._pool = pool
        self.address = address
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._done: asyncio.Future[None] | None = None
        self._body = bytearray()
        self._content_type: bytes | None = None
        self._status = 0
        self._keep_alive = False
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(StatFetchError(f"bad HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(StatFetchError("connection closed"))
        self._pool.forget(self)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self._content_type = value

    def on_headers_complete(self) -> None:
        # Read here: once the message completes the parser resets for the next one.
        self._status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._body += body
        if len(self._body) > MAX_BODY:
            self._fail(StatFetchError("body too large for a Stat"))

    def on_message_complete(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _reset(self) -> None:
        self._body.clear()
        self._content_type = None
        self._status = 0
        self._keep_alive = False

    async def get(self, request: bytes) -> Stat:
        assert self._transport is not None
        self._reset()
        self._done = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        await self._done
        status = self._status
        if not self._keep_alive:
            self.close()
        if not 200 <= status < 300:
            raise StatFetchError(f"HTTP {status}")
        if self._content_type != _CONTENT_TYPE:
            raise StatFetchError(f"not {PROTOBUF_CONTENT_TYPE}")
        try:
            return decode_stat(bytes(self._body))
        except DecodeError as exc:
            raise StatFetchError(str(exc)) from None


class StatClient:
    """Fetches `Stat`s; every failure raises `StatFetchError` or `TimeoutError` within `timeout` seconds."""

    __slots__ = ("_idle", "_timeout")

    def __init__(self, *, timeout: float = 1.0) -> None:
        self._timeout = timeout
        self._idle: dict[tuple[str, int], _Connection] = {}

    async def fetch(self, host: str, port: int) -> Stat:
        address = (host, port)
        connection = self._idle.pop(address, None)
        try:
            async with asyncio.timeout(self._timeout):
                if connection is None or connection.closed:
                    connection = await self._connect(address)
                request = b"GET /metrics HTTP/1.1\r\nHost: %s:%d\r\nAccept: %s\r\n\r\n" % (
                    host.encode(),
                    port,
                    _CONTENT_TYPE,
                )
                stat = await connection.get(request)
        except BaseException:
            if connection is not None:
                connection.close()  # a half-read response cannot be reused
            raise
        if not connection.closed and len(self._idle) < MAX_IDLE and address not in self._idle:
            self._idle[address] = connection
        else:
            connection.close()
        return stat

    async def _connect(self, address: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(lambda: _Connection(self, address), *address)
        except OSError as exc:
            raise StatFetchError(f"cannot connect: {exc.strerror or exc}") from None
        return protocol

    def forget(self, connection: _Connection) -> None:
        """A connection closed: drop it if it was idle."""
        if self._idle.get(connection.address) is connection:
            del self._idle[connection.address]

    def close(self) -> None:
        """Close every idle connection."""
        for connection in list(self._idle.values()):
            connection.close()
        self._idle.clear()
