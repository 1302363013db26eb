"""Raw-socket HTTP/1.1 tools for testing the engine: a byte-exact client, and upstreams to forward to.

The client writes exactly the bytes a test gives it and parses responses with a strict parser of its own, so
the tests see framing mistakes instead of having a forgiving client paper over them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from serving.http import Exchange, Headers, ServerLimits, UpstreamPool, serve

WAIT = 10.0  # generous: the machine may be loaded


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool = False
    trailers: list[tuple[str, str]] = field(default_factory=list)
    raw_head: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


class Closed(Exception):
    """The server closed (or reset) the connection before a whole response arrived."""

    def __init__(self, message: str, partial: bytes) -> None:
        super().__init__(message)
        self.partial = partial


class RawClient:
    """One client connection; writes raw bytes and reads whole responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(self, data: bytes, *, head: bool = False) -> Response:
        await self.send(data)
        return await self.read_response(head=head)

    async def _line(self, partial: bytearray) -> bytes:
        try:
            line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), WAIT)
        except asyncio.IncompleteReadError as exc:
            raise Closed("closed in the middle of a line", bytes(partial) + exc.partial) from None
        except ConnectionError as exc:
            raise Closed(f"reset: {exc}", bytes(partial)) from None
        partial += line
        return line[:-2]

    async def _exactly(self, n: int, partial: bytearray) -> bytes:
        try:
            data = await asyncio.wait_for(self.reader.readexactly(n), WAIT)
        except asyncio.IncompleteReadError as exc:
            raise Closed(
                f"closed after {len(exc.partial)} of {n} body bytes", bytes(partial) + exc.partial
            ) from None
        except ConnectionError as exc:
            raise Closed(f"reset: {exc}", bytes(partial)) from None
        partial += data
        return data

    async def read_response(self, *, head: bool = False, interim: bool = False) -> Response:
        """Read one final response (interim 1xx ones are skipped unless `interim`)."""
        while True:
            partial = bytearray()
            status_line = await self._line(partial)
            version, _, rest = status_line.decode("latin-1").partition(" ")
            assert version in ("HTTP/1.1", "HTTP/1.0"), status_line
            code, _, reason = rest.partition(" ")
            status = int(code)
            headers: list[tuple[str, str]] = []
            while True:
                line = await self._line(partial)
                if not line:
                    break
                name, sep, value = line.decode("latin-1").partition(":")
                assert sep, line
                assert name == name.strip(), line
                headers.append((name, value.strip()))
            raw_head = bytes(partial)
            if 100 <= status < 200 and status != 101 and not interim:
                continue
            break
        response = Response(status, reason, headers, b"", raw_head=raw_head)
        lengths = [v for k, v in headers if k.lower() == "content-length"]
        codings = [v for k, v in headers if k.lower() == "transfer-encoding"]
        if head or status in (101, 204, 304) or status < 200:
            return response
        if codings:
            assert codings[-1].split(",")[-1].strip().lower() == "chunked", codings
            assert not lengths, "both Content-Length and Transfer-Encoding"
            response.chunked = True
            body = bytearray()
            while True:
                size_line = await self._line(partial)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    break
                body += await self._exactly(size, partial)
                assert await self._exactly(2, partial) == b"\r\n"
            while True:
                line = await self._line(partial)
                if not line:
                    break
                name, _, value = line.decode("latin-1").partition(":")
                response.trailers.append((name, value.strip()))
            response.body = bytes(body)
        elif lengths:
            assert len(set(lengths)) == 1, lengths
            response.body = await self._exactly(int(lengths[0]), partial)
        else:
            try:
                response.body = await asyncio.wait_for(self.reader.read(), WAIT)
            except ConnectionError as exc:
                raise Closed(f"reset: {exc}", bytes(partial)) from None
        return response

    async def closed(self) -> bool:
        """Whether the server closes the connection (EOF or reset) without sending anything more."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), WAIT)
        except ConnectionError:
            return True
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def get(path: str = "/", *, host: str = "app", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


Handler = Callable[[Exchange], Awaitable[None]]


@contextlib.asynccontextmanager
async def engine(handler: Handler, limits: ServerLimits | None = None) -> AsyncIterator[int]:
    """Run the engine with `handler` on a free port; yield the port."""
    server = await serve(handler, "127.0.0.1", 0, limits=limits or ServerLimits())
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def forwarder(pool: UpstreamPool, **kwargs: object) -> Handler:
    """A handler that forwards every request to `pool` unchanged."""

    async def handle(ex: Exchange) -> None:
        await ex.forward(pool, ex.request.headers, **kwargs)  # type: ignore[arg-type]  # test-only passthrough

    return handle


@contextlib.asynccontextmanager
async def app_server(app: web.Application) -> AsyncIterator[int]:
    """A real aiohttp upstream on a free port."""
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None)
    assert sockets
    try:
        yield sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()


RawUpstream = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(serve_conn: RawUpstream) -> AsyncIterator[int]:
    """An upstream that does whatever `serve_conn` does with each raw connection (for misbehaving apps)."""
    tasks: set[asyncio.Task[None]] = set()
    writers: set[asyncio.StreamWriter] = set()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        writers.add(writer)
        try:
            await serve_conn(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            writers.discard(writer)
            tasks.discard(task)

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        # Resetting the connections ends every connection task on its own (cancelling them upsets asyncio's
        # stream server in Python 3.11).
        for writer in list(writers):
            writer.transport.abort()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT)


async def two_gets_forwarded_to(serve_conn: RawUpstream) -> tuple[Response, Response]:
    """Two GETs on one client connection, through a forwarder to a raw upstream doing `serve_conn`: the
    shape of every check that one upstream answer cannot leak into the next request's."""
    async with raw_server(serve_conn) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            first = await client.request(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
            second = await client.request(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
            await client.close()
        await pool.close()
    return first, second


async def read_head(reader: asyncio.StreamReader) -> tuple[str, Headers]:
    """Read a request head on a raw upstream: the request line and the headers."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    items = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            items.append((name.strip(), value.strip()))
    return lines[0], Headers(items)
