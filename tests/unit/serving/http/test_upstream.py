"""Forwarding to raw-socket upstreams that behave exactly as each test needs, well or badly."""

from __future__ import annotations

import asyncio

import pytest

from serving.http import (
    Exchange,
    ForwardTimeouts,
    IdleTimeout,
    UpstreamError,
    UpstreamPool,
)
from tests.unit.serving.http.rawhttp import Closed, RawClient, engine, forwarder, get, raw_server, read_head


async def read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """A chunked body as the upstream receives it: (data, raw trailer section)."""
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            break
        body += await reader.readexactly(size)
        assert await reader.readexactly(2) == b"\r\n"
    trailers = bytearray()
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        trailers += line
    return bytes(body), bytes(trailers)


class Recorder:
    """Errors a handler saw, and a 502/504 answer for them like a proxy would give."""

    def __init__(self, pool: UpstreamPool, timeouts: ForwardTimeouts | None = None) -> None:
        self.pool = pool
        self.timeouts = timeouts or ForwardTimeouts()
        self.errors: list[BaseException] = []
        self.statuses: list[int] = []
        self.cancelled = asyncio.Event()

    async def __call__(self, ex: Exchange) -> None:
        try:
            self.statuses.append(await ex.forward(self.pool, ex.request.headers, timeouts=self.timeouts))
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        except Exception as exc:
            self.errors.append(exc)
            if not ex.response_started:
                await ex.respond(504 if isinstance(exc, IdleTimeout) else 502)


@pytest.mark.parametrize(
    ("method", "status", "headers"),
    [
        pytest.param("HEAD", 200, b"Content-Length: 1234\r\n", id="head-with-length"),
        pytest.param("HEAD", 200, b"Transfer-Encoding: chunked\r\n", id="head-chunked"),
        pytest.param("GET", 204, b"", id="no-content"),
        pytest.param("GET", 304, b"ETag: x\r\n", id="not-modified"),
    ],
)
async def test_bodyless_responses_keep_both_connections_usable(
    method: str, status: int, headers: bytes
) -> None:
    upstream_connections = 0

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal upstream_connections
        upstream_connections += 1
        while True:
            line, _ = await read_head(reader)
            if "/bodyless" in line:
                writer.write(b"HTTP/1.1 %d X\r\n%s\r\n" % (status, headers))
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            for _ in range(2):
                first = await client.request(
                    f"{method} /bodyless HTTP/1.1\r\nHost: a\r\n\r\n".encode(), head=True
                )
                assert first.status == status
                if "Content-Length: 1234" in headers.decode():
                    assert first.header("content-length") == "1234"
                second = await client.request(get())
                assert second.body == b"next"
            await client.close()
        await pool.close()
    assert upstream_connections == 1


async def test_http10_client_gets_a_close_delimited_body_from_a_chunked_upstream() -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        await reader.read()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            response = await client.request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert response.header("transfer-encoding") is None
            assert response.body == b"abcde"  # read to EOF
            await client.close()
        await pool.close()


async def test_close_delimited_upstream_body_is_rechunked_and_not_reused() -> None:
    connections = 0

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_head(reader)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil ")
        await writer.drain()
        writer.write(b"close")
        writer.close()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            for _ in range(2):
                response = await client.request(get())
                assert response.chunked
                assert response.body == b"until close"
            await client.close()
        await pool.close()
    assert connections == 2


async def test_request_trailers_pass_through_and_response_trailers_are_dropped_cleanly() -> None:
    received: list[tuple[bytes, bytes]] = []

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line, _ = await read_head(reader)
            if line.startswith("POST"):
                received.append(await read_chunked(reader))
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                b"4\r\nbody\r\n0\r\nX-Sum: 42\r\n\r\n"
            )

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            response = await client.request(
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\nX-Check: ok\r\n\r\n"
            )
            assert response.body == b"body"
            assert response.chunked
            assert response.trailers == []
            assert response.header("trailer") is None
            again = await client.request(get())  # the connection is still in step
            assert again.body == b"body"
            await client.close()
        await pool.close()
    assert received == [(b"abc", b"X-Check: ok\r\n")]


async def test_expect_100_continue_is_answered_when_the_body_is_wanted() -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, headers = await read_head(reader)
        assert "expect" not in headers
        body = await reader.readexactly(int(headers.get("content-length") or 0))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await reader.read()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            await client.send(
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            )
            interim = await client.read_response(interim=True)
            assert interim.status == 100
            await client.send(b"hello")
            response = await client.read_response()
            assert response.body == b"hello"
            await client.close()
        await pool.close()


async def test_idle_pooled_connections_expire_before_the_upstream_closes_them() -> None:
    closed_by_engine = asyncio.Event()
    connections = 0

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                await read_head(reader)
            except asyncio.IncompleteReadError:
                closed_by_engine.set()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port, idle_expiry=0.05)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            assert (await client.request(get())).status == 200
            await asyncio.wait_for(closed_by_engine.wait(), 5)
            assert pool.idle_count == 0
            assert (await client.request(get())).status == 200
            await client.close()
        await pool.close()
    assert connections == 2


async def stale_after_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers one request per connection, then closes when the next one arrives (a keep-alive race lost)."""
    await read_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
    await writer.drain()
    await read_head(reader)
    writer.transport.abort()


async def test_stale_pooled_connection_is_retried_once_for_a_request_without_body() -> None:
    async with raw_server(stale_after_first) as port:
        pool = UpstreamPool("127.0.0.1", port)
        recorder = Recorder(pool)
        async with engine(recorder) as eport:
            client = await RawClient.connect(eport)
            assert (await client.request(get())).body == b"first"
            response = await client.request(get())
            assert (response.status, response.body) == (200, b"first")
            assert recorder.errors == []
            await client.close()
        await pool.close()


async def test_stale_pooled_connection_is_not_retried_for_a_request_with_body() -> None:
    async with raw_server(stale_after_first) as port:
        pool = UpstreamPool("127.0.0.1", port)
        recorder = Recorder(pool)
        async with engine(recorder) as eport:
            client = await RawClient.connect(eport)
            assert (await client.request(get())).body == b"first"
            response = await client.request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
            assert response.status == 502
            assert isinstance(recorder.errors[0], UpstreamError)
            assert not recorder.errors[0].response_started
            await client.close()
        await pool.close()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads the request, then hangs up without a byte of response (an upstream that died on it)."""
    await read_head(reader)
    writer.transport.abort()


async def answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
    await writer.drain()


@pytest.mark.parametrize(
    ("request_bytes", "forwardable"),
    [
        pytest.param(get(), True, id="without-body"),
        pytest.param(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi", False, id="with-body"),
    ],
)
async def test_a_failure_before_the_response_leaves_a_bodiless_exchange_forwardable_again(
    request_bytes: bytes, forwardable: bool
) -> None:
    """The handler decides (by the method) whether to send it elsewhere; a streamed body cannot be resent."""
    async with raw_server(hang_up) as dead_port, raw_server(answer_ok) as live_port:
        dead, live = UpstreamPool("127.0.0.1", dead_port), UpstreamPool("127.0.0.1", live_port)
        seen: list[str] = []

        async def handler(ex: Exchange) -> None:
            try:
                await ex.forward(dead, ex.request.headers)
            except UpstreamError as exc:
                seen.append(f"started={exc.response_started}")
                try:
                    await ex.forward(live, ex.request.headers)
                    seen.append("forwarded again")
                except RuntimeError:
                    seen.append("refused")
                    await ex.respond(502)

        async with engine(handler) as eport:
            client = await RawClient.connect(eport)
            response = await client.request(request_bytes)
            await client.close()
        assert seen == ["started=False", "forwarded again" if forwardable else "refused"]
        assert (response.status, response.body) == ((200, b"second") if forwardable else (502, b""))
        await dead.close()
        await live.close()


async def test_early_response_while_the_body_arrives_closes_the_upstream_connection() -> None:
    connections = 0

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        line, _ = await read_head(reader)
        if line.startswith("POST"):
            writer.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 8\r\n\r\ntoo big!")
            await writer.drain()
            await asyncio.sleep(0.05)
            await reader.read(1 << 16)  # reads a little, then lingers
            await reader.read()
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await reader.read()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            await client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 1000)
            response = await client.read_response()
            assert (response.status, response.body) == (413, b"too big!")
            assert response.header("connection") == "close"
            await client.send(b"y" * 100_000)  # the rest of the body is read and dropped, then EOF
            assert await client.closed()
            assert pool.idle_count == 0
            await client.close()
            fresh = await RawClient.connect(eport)
            assert (await fresh.request(get())).body == b"ok"
            await fresh.close()
        await pool.close()
    assert connections == 2


@pytest.mark.parametrize(
    "partial_response",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"a" * 50, id="content-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n", id="chunked"),
    ],
)
async def test_upstream_failure_mid_response_aborts_the_client(partial_response: bytes) -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(partial_response)
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.transport.abort()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        recorder = Recorder(pool)
        async with engine(recorder) as eport:
            client = await RawClient.connect(eport)
            with pytest.raises(Closed) as info:
                await client.request(get())
            assert info.value.partial.startswith(b"HTTP/1.1 200 OK\r\n")
            assert not info.value.partial.endswith(b"0\r\n\r\n")
            assert isinstance(recorder.errors[0], UpstreamError)
            assert recorder.errors[0].response_started
            await client.close()
        await pool.close()


async def test_client_disconnect_cancels_the_handler_and_the_upstream_request() -> None:
    upstream_saw_close = asyncio.Event()
    request_arrived = asyncio.Event()

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        request_arrived.set()
        if await reader.read() == b"":
            upstream_saw_close.set()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        recorder = Recorder(pool)
        async with engine(recorder) as eport:
            client = await RawClient.connect(eport)
            await client.send(get())
            await asyncio.wait_for(request_arrived.wait(), 5)
            await client.close()
            await asyncio.wait_for(recorder.cancelled.wait(), 5)
            await asyncio.wait_for(upstream_saw_close.wait(), 5)
            assert pool.idle_count == 0
        await pool.close()


async def test_client_disconnect_mid_body_cancels_the_upstream_request() -> None:
    upstream_saw_close = asyncio.Event()

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        while await reader.read(65536):
            pass
        upstream_saw_close.set()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        recorder = Recorder(pool)
        async with engine(recorder) as eport:
            client = await RawClient.connect(eport)
            await client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n" + b"z" * 5000)
            await asyncio.sleep(0.02)
            client.writer.transport.abort()
            await asyncio.wait_for(recorder.cancelled.wait(), 5)
            await asyncio.wait_for(upstream_saw_close.wait(), 5)
        await pool.close()


async def test_idle_timeout_before_and_after_the_response_started() -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, _ = await read_head(reader)
        if "started" in line:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await reader.read()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        recorder = Recorder(pool, ForwardTimeouts(idle=0.1))
        async with engine(recorder) as eport:
            client = await RawClient.connect(eport)
            response = await client.request(get("/silent"))
            assert response.status == 504
            await client.close()
            client = await RawClient.connect(eport)
            with pytest.raises(Closed) as info:
                await client.request(get("/started"))
            assert info.value.partial.endswith(b"abc")
            await client.close()
        await pool.close()
    assert [type(e) for e in recorder.errors] == [IdleTimeout, IdleTimeout]


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"garbage\r\n\r\n", id="garbage"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", id="two-lengths"
        ),
        pytest.param(
            b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n", id="unasked-101"
        ),
        pytest.param(b"", id="closed-at-once"),
    ],
)
async def test_invalid_upstream_responses_are_upstream_errors(reply: bytes) -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(reply)
        await writer.drain()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        recorder = Recorder(pool)
        async with engine(recorder) as eport:
            client = await RawClient.connect(eport)
            response = await client.request(get())
            assert response.status == 502
            assert isinstance(recorder.errors[0], UpstreamError)
            assert (await client.request(get())).status == 502  # the client connection is still fine
            await client.close()
        await pool.close()


async def test_response_hop_by_hop_headers_are_dropped_and_close_is_honoured() -> None:
    connections = 0

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_head(reader)
        writer.write(
            b"HTTP/1.1 200 Fine\r\nX-Keep: 1\r\nConnection: close, X-Private\r\nX-Private: secret\r\n"
            b"Keep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok"
        )
        await writer.drain()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            for _ in range(2):
                response = await client.request(get())
                assert (response.status, response.reason, response.body) == (200, "Fine", b"ok")
                names = {name.lower() for name, _ in response.headers}
                assert names == {"x-keep", "content-length"}
            await client.close()
        await pool.close()
    assert connections == 2  # the upstream said close: never reused


async def test_empty_lines_before_a_response_keep_its_fields() -> None:
    """llhttp skips empty lines before a status line: the head after them is relayed whole, not cut there."""

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            writer.write(b"\r\n\r\nHTTP/1.1 200 Fine\r\nX-Keep: 1\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            for _ in range(2):
                response = await client.request(get())
                assert (response.status, response.reason, response.body) == (200, "Fine", b"ok")
                assert response.header("x-keep") == "1"
            await client.close()
        await pool.close()


async def test_interim_responses_are_skipped_in_any_split() -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line, _ = await read_head(reader)
            if "split" in line:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
                writer.write(b"\r\nHTTP/1.1 200 OK\r\nContent-")
                await writer.drain()
                await asyncio.sleep(0.01)
                writer.write(b"Length: 5\r\n\r\nsplit")
            else:
                writer.write(
                    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\none"
                )
            await writer.drain()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            together = await client.request(get("/together"))
            assert (together.status, together.body) == (201, b"one")
            split = await client.request(get("/split"))
            assert (split.status, split.body) == (200, b"split")
            assert split.header("link") is None
            assert (await client.request(get("/together"))).body == b"one"
            await client.close()
        await pool.close()


async def test_endless_response_head_is_an_upstream_error() -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Long: ")
        for _ in range(100):
            writer.write(b"a" * 10_000)
            await writer.drain()
        await reader.read()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        recorder = Recorder(pool)
        async with engine(recorder) as eport:
            client = await RawClient.connect(eport)
            assert (await client.request(get())).status == 502
            assert "too large" in str(recorder.errors[0])
            await client.close()
        await pool.close()
