"""HTTP/2 cleartext through the engine, checked frame by frame from raw sockets: the preface handover, local
answers, multiplexing, flow control, trailers, resets, GOAWAY, protocol abuse, and fuzzed frame sequences."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import struct
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import h2.errors
import h2.settings
import hpack
import pytest
from aiohttp import web
from hyperframe.frame import PingFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.http import (
    Exchange,
    ForwardTimeouts,
    H2Exchange,
    H2UpstreamPool,
    Server,
    ServerLimits,
    UpstreamConnectError,
    UpstreamPool,
    serve,
)
from tests.unit.serving.http.rawh2 import (
    FrameClient,
    H2Peer,
    Stream,
    StreamGone,
    continuation_frame,
    h2_upstream,
    headers_frame,
    request_block,
)
from tests.unit.serving.http.rawhttp import RawClient, RawUpstream, app_server, get, raw_server, read_head

MIB = 1024 * 1024
ErrorCodes = h2.errors.ErrorCodes
AnyExchange = Exchange | H2Exchange
Handler = Callable[[AnyExchange], Awaitable[None]]


@pytest.fixture(autouse=True)
async def no_loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Whatever the clients do, nothing reaches the loop's exception handler (a protocol callback that
    raised, a task whose exception nobody retrieved)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    yield errors
    loop.set_exception_handler(previous)
    assert not errors, errors


@contextlib.asynccontextmanager
async def engine(handler: Handler, limits: ServerLimits | None = None) -> AsyncIterator[Server]:
    """The engine with `handler` on a free port; what is still open at the end is reset."""
    server = await serve(handler, "127.0.0.1", 0, limits=limits or ServerLimits())
    try:
        yield server
    finally:
        await server.drain(0)


def proxy(pool: UpstreamPool | H2UpstreamPool) -> Handler:
    """A handler that forwards every request, HTTP/1.1 or HTTP/2, to `pool` unchanged."""

    async def handle(ex: AnyExchange) -> None:
        await ex.forward(pool, ex.request.headers, timeouts=ForwardTimeouts(connect=5))

    return handle


async def echo_h2(ex: AnyExchange) -> None:
    """An HTTP/2 app on the engine: answers with the whole request body and what it saw of the request."""
    assert isinstance(ex, H2Exchange)
    chunks = []
    while (data := await ex.body.read()) is not None:
        chunks.append(data)
    seen = [
        ("x-version", ex.request.version),
        ("x-path", ex.request.target),
        ("x-host", ex.request.headers.get("host") or ""),
    ]
    await ex.respond(200, seen, b"".join(chunks))


async def path_h1(ex: AnyExchange) -> None:
    """An HTTP/1.1 app on the engine: answers with the request target."""
    await ex.respond(200, [("x-version", ex.request.version)], ex.request.target.encode())


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll (every 5 ms) a state the test cannot await, such as a server's connection count."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def still_serves(port: int) -> None:
    """A new HTTP/2 connection and a new HTTP/1.1 connection are both answered."""
    client = await H2Peer.connect(port)
    stream = await client.fetch("/alive")
    assert stream.ended, stream
    assert stream.status == 200, stream
    await client.close()
    raw = await RawClient.connect(port)
    response = await raw.request(get("/alive"))
    assert response.status == 200
    await raw.close()


async def local(ex: AnyExchange) -> None:
    """Local answers: /status/<n> answers n with a body; anything else 200 with the target."""
    target = ex.request.target
    if target.startswith("/status/"):
        await ex.respond(int(target.rsplit("/", 1)[1]), [("x-local", "1")], b"body")
        return
    await ex.respond(200, [("x-version", ex.request.version)], target.encode())


# -- 1. the preface, on the HTTP/1.1 port --------------------------------------------------------------------


async def test_http11_and_h2_on_the_same_port() -> None:
    async with engine(local) as server:
        raw = await RawClient.connect(server.port)
        response = await raw.request(get("/one"))
        assert (response.status, response.header("x-version"), response.body) == (200, "1.1", b"/one")

        client = await H2Peer.connect(server.port)
        stream = await client.fetch("/two")
        assert stream.ended
        assert stream.status == 200
        assert (stream.header("x-version"), bytes(stream.data)) == ("2", b"/two")

        response = await raw.request(get("/three"))  # the HTTP/1.1 connection is not disturbed
        assert response.body == b"/three"
        await raw.close()
        await client.close()


async def test_a_preface_split_byte_by_byte_is_still_http2() -> None:
    async with engine(local) as server:
        client = await H2Peer.connect(server.port, split=True)
        stream = await client.fetch("/split")
        assert stream.ended
        assert stream.status == 200
        assert (stream.header("x-version"), bytes(stream.data)) == ("2", b"/split")
        await client.close()


async def test_a_request_starting_like_the_preface_is_still_http11() -> None:
    """The first byte of `POST` is also the preface's: it is held until the next byte tells them apart, then
    parsed as HTTP/1.1 with nothing lost."""
    async with engine(local) as server:
        raw = await RawClient.connect(server.port)
        await raw.send(b"P")
        await asyncio.sleep(0.005)
        response = await raw.request(b"OST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
        assert (response.status, response.header("x-version"), response.body) == (200, "1.1", b"/x")
        await raw.close()


# -- 1b. Upgrade: h2c ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("eager", [False, True], ids=["preface-after-101", "preface-with-request"])
async def test_upgrade_h2c_answers_the_request_as_stream_1_and_goes_on_in_http2(eager: bool) -> None:
    async with engine(local) as server:
        client, head = await H2Peer.upgrade(server.port, "/first", eager=eager)
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert b"upgrade: h2c" in head.lower()
        first = await client.response(1)
        await client.wait_for(lambda: first.ended)
        assert first.status == 200
        assert (first.header("x-version"), bytes(first.data)) == ("2", b"/first")
        second = await client.fetch("/second")  # stream 3, on the same connection
        assert (second.status, bytes(second.data)) == (200, b"/second")
        await client.close()


async def test_upgrade_h2c_on_a_kept_alive_connection() -> None:
    async with engine(local) as server:
        raw = await RawClient.connect(server.port)
        assert (await raw.request(get("/before"))).body == b"/before"
        client, head = await H2Peer.upgrade_streams(raw.reader, raw.writer, "/up", host="a", eager=False)
        assert head.startswith(b"HTTP/1.1 101 "), head
        first = await client.response(1)
        await client.wait_for(lambda: first.ended)
        assert (first.status, first.header("x-version"), bytes(first.data)) == (200, "2", b"/up")
        await client.close()


async def test_curl_upgrades_and_gets_its_answer_over_http2() -> None:
    async with engine(local) as server:
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "--http2",
            "-o",
            "-",
            "-w",
            "\n%{http_version}",
            f"http://127.0.0.1:{server.port}/curl",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err
        assert out.decode().splitlines() == ["/curl", "2"]


UPGRADE = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(
            b"POST /declined HTTP/1.1\r\nHost: a\r\n"
            + UPGRADE
            + b"HTTP2-Settings: \r\nContent-Length: 5\r\n\r\nhello",
            id="with-a-body",
        ),
        pytest.param(b"GET /declined HTTP/1.1\r\nHost: a\r\n" + UPGRADE + b"\r\n", id="no-settings"),
        pytest.param(
            b"GET /declined HTTP/1.1\r\nHost: a\r\n" + UPGRADE + b"HTTP2-Settings: AAMAA\r\n\r\n",
            id="malformed-settings",
        ),
        pytest.param(
            b"GET /declined HTTP/1.1\r\nHost: a\r\n"
            + UPGRADE
            + b"HTTP2-Settings: \r\nHTTP2-Settings: \r\n\r\n",
            id="two-settings",
        ),
        pytest.param(
            b"GET /declined HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: \r\n\r\n",
            id="settings-not-in-connection",
        ),
    ],
)
async def test_a_declined_upgrade_is_answered_over_http11(request_: bytes) -> None:
    """RFC 7540 section 3.2: a server that does not switch answers the request as HTTP/1.1; the connection
    goes on (the body of a declined upgrade, which the parser skips, is read as the body)."""

    async def echo(request: web.Request) -> web.Response:
        seen = f"{request.version.major}.{request.version.minor} {request.headers.get('upgrade')}"
        return web.Response(
            body=request.path.encode() + b" " + await request.read(), headers={"x-seen": seen}
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    async with app_server(app) as port, engine(proxy(UpstreamPool("127.0.0.1", port))) as server:
        raw = await RawClient.connect(server.port)
        response = await raw.request(request_)
        assert response.status == 200
        assert response.body == b"/declined " + (b"hello" if request_.startswith(b"POST") else b"")
        assert response.header("x-seen") == "1.1 None"  # HTTP/1.1, and no upgrade asked of the app
        assert (await raw.request(get("/next"))).body == b"/next "
        await raw.close()


async def test_a_pipelined_upgrade_is_declined_and_both_answered_in_order() -> None:
    async with engine(local) as server:
        raw = await RawClient.connect(server.port)
        await raw.send(
            get("/one")
            + b"GET /two HTTP/1.1\r\nHost: a\r\n"
            + UPGRADE
            + b"HTTP2-Settings: \r\n\r\n"
            + get("/three")
        )
        bodies = [(await raw.read_response()).body for _ in range(3)]
        assert bodies == [b"/one", b"/two", b"/three"]
        await raw.close()


async def test_an_upgraded_request_is_forwarded_to_an_h2_upstream() -> None:
    async with engine(echo_h2) as app, engine(proxy(H2UpstreamPool("127.0.0.1", app.port))) as front:
        client, head = await H2Peer.upgrade(front.port, "/through", host="svc")
        assert head.startswith(b"HTTP/1.1 101 ")
        first = await client.response(1)
        await client.wait_for(lambda: first.ended)
        assert (first.status, first.header("x-path"), first.header("x-host")) == (200, "/through", "svc")
        await client.close()


# -- 2. local answers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "status", "length", "body"),
    [
        pytest.param("GET", 200, "4", b"body", id="get"),
        pytest.param("HEAD", 200, "4", b"", id="head-keeps-length"),
        pytest.param("GET", 204, None, b"", id="no-content"),
        pytest.param("GET", 304, None, b"", id="not-modified"),
        pytest.param("GET", 404, "4", b"body", id="not-found"),
    ],
)
async def test_local_answers(method: str, status: int, length: str | None, body: bytes) -> None:
    async with engine(local) as server:
        client = await H2Peer.connect(server.port)
        stream = await client.fetch(f"/status/{status}", method=method)
        assert stream.ended
        assert stream.reset_code is None
        assert stream.status == status
        assert stream.header("x-local") == "1"
        assert stream.header("content-length") == length
        assert bytes(stream.data) == body
        assert stream.trailers is None
        # The connection goes on after the answer.
        again = await client.fetch("/after")
        assert bytes(again.data) == b"/after"
        await client.close()


async def test_a_grpc_request_answered_locally_with_an_error_gets_a_grpc_status() -> None:
    async def overflow(ex: AnyExchange) -> None:
        await ex.respond(503, body=b"queue full")

    async with engine(overflow) as server:
        client = await H2Peer.connect(server.port)
        stream = await client.fetch(
            "/pkg.Svc/Call", method="POST", extra=[("content-type", "application/grpc"), ("te", "trailers")]
        )
        assert stream.ended
        assert stream.status == 200
        assert stream.header("grpc-status") == "14"  # UNAVAILABLE
        assert stream.header("grpc-message") == "queue full"
        assert bytes(stream.data) == b""
        await client.close()


# -- 3. multiplexing -----------------------------------------------------------------------------------------


async def test_50_concurrent_streams_to_an_h2_upstream_share_one_connection() -> None:
    in_flight = 0
    most = 0

    async def app(ex: AnyExchange) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            await asyncio.sleep(0.02)  # long enough for the streams to overlap
            await echo_h2(ex)
        finally:
            in_flight -= 1

    async with engine(app) as upstream:
        pool = H2UpstreamPool("127.0.0.1", upstream.port)
        async with engine(proxy(pool)) as server:
            client = await H2Peer.connect(server.port)
            ids = {client.request(f"/s/{i}", authority=f"app{i}"): i for i in range(50)}
            streams = [await client.response(sid) for sid in ids]
            for stream in streams:
                i = ids[stream.id]
                assert stream.ended, stream
                assert stream.status == 200, stream
                assert stream.header("x-path") == f"/s/{i}"
                assert stream.header("x-host") == f"app{i}"
                assert stream.header("x-version") == "2"
            assert most > 1, "the upstream saw the streams one at a time"
            assert pool.connections == 1
            assert upstream.connections == 1
            await client.close()
        await pool.close()


async def test_50_concurrent_streams_to_an_http11_upstream() -> None:
    async with engine(path_h1) as upstream:
        pool = UpstreamPool("127.0.0.1", upstream.port)
        async with engine(proxy(pool)) as server:
            client = await H2Peer.connect(server.port)
            ids = {client.request(f"/s/{i}"): i for i in range(50)}
            for sid, i in ids.items():
                stream = await client.response(sid)
                assert stream.ended, stream
                assert stream.status == 200, stream
                assert bytes(stream.data) == f"/s/{i}".encode()
                assert stream.header("x-version") == "1.1"
            await client.close()
        await pool.close()


def keep_alive_upstream(
    connections: list[int], answer: Callable[[int, int, str], bytes | None]
) -> RawUpstream:
    """A raw HTTP/1.1 upstream answering requests on each connection in turn with `answer(connection,
    request, path)` (None: close without answering); `connections` counts the connections it accepted."""

    async def serve_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        number = len(connections)
        request = 0
        while True:
            line, headers = await read_head(reader)
            length = int(headers.get("content-length") or 0)
            if length:
                await reader.readexactly(length)
            request += 1
            response = answer(number, request, line.split()[1])
            if response is None:
                return
            writer.write(response)
            await writer.drain()

    return serve_conn


def ok(path: str, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\ncontent-length: {len(path)}\r\n{extra}\r\n{path}".encode()


async def test_h2_requests_to_an_http11_upstream_reuse_its_connections() -> None:
    connections: list[int] = []
    async with raw_server(keep_alive_upstream(connections, lambda _c, _r, path: ok(path))) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(proxy(pool)) as server:
            client = await H2Peer.connect(server.port)
            for i in range(20):
                stream = await client.fetch(f"/r/{i}")
                assert (stream.status, bytes(stream.data)) == (200, f"/r/{i}".encode())
                await eventually(lambda: pool.idle_stream_count == 1)
            await client.close()
        await pool.close()
        assert pool.idle_stream_count == 0
    assert len(connections) == 1


@pytest.mark.parametrize(
    "last",
    [
        pytest.param(lambda path: ok(path, "connection: close\r\n"), id="connection-close"),
        pytest.param(lambda path: ok(path) + ok("/stale"), id="bytes-after-the-response"),
        pytest.param(
            lambda path: f"HTTP/1.0 200 OK\r\ncontent-length: {len(path)}\r\n\r\n{path}".encode(),
            id="http-1.0",
        ),
    ],
)
async def test_a_connection_that_cannot_carry_another_request_is_not_kept(
    last: Callable[[str], bytes],
) -> None:
    connections: list[int] = []
    async with raw_server(keep_alive_upstream(connections, lambda _c, _r, path: last(path))) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(proxy(pool)) as server:
            client = await H2Peer.connect(server.port)
            for path in ("/one", "/two"):
                stream = await client.fetch(path)
                assert (stream.status, bytes(stream.data)) == (200, path.encode())
                await asyncio.sleep(0.05)  # the first exchange has ended: its connection was closed, not kept
                assert pool.idle_stream_count == 0
            await client.close()
        await pool.close()
    assert len(connections) == 2


@pytest.mark.parametrize(("method", "status"), [("GET", 200), ("POST", 502)])
async def test_a_kept_connection_the_upstream_closes_unanswered_is_retried_only_without_a_body(
    method: str, status: int
) -> None:
    """The upstream closes a kept connection just as the next request arrives (its keep-alive timeout): a
    request without a body goes again on a new connection; one whose body was sent cannot."""
    connections: list[int] = []

    def answer(connection: int, request: int, path: str) -> bytes | None:
        return None if (connection, request) == (1, 2) else ok(path)

    async with raw_server(keep_alive_upstream(connections, answer)) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(proxy(pool)) as server:
            client = await H2Peer.connect(server.port)
            assert (await client.fetch("/first")).status == 200
            await eventually(lambda: pool.idle_stream_count == 1)
            stream = await client.fetch("/second", method=method, body=b"data" if method == "POST" else b"")
            assert stream.status == status, stream
            if status == 200:
                assert bytes(stream.data) == b"/second"
            await client.close()
        await pool.close()
    assert len(connections) == (2 if method == "GET" else 1)


async def test_after_a_kept_connection_fails_the_retry_takes_a_new_one_not_another_kept_one() -> None:
    """Two kept connections, both of which the upstream will close unanswered: one failure, then a new
    connection; the request is tried twice, never three times."""
    connections: list[int] = []
    unanswered: list[int] = []

    def answer(connection: int, request: int, path: str) -> bytes | None:
        if connection <= 2 and request == 2:
            unanswered.append(connection)
            return None
        return ok(path)

    async with raw_server(keep_alive_upstream(connections, answer)) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(proxy(pool)) as server:
            client = await H2Peer.connect(server.port)
            first, second = client.request("/a"), client.request("/b")  # two at once: two connections
            for stream_id in (first, second):
                assert (await client.response(stream_id)).status == 200
            await eventually(lambda: pool.idle_stream_count == 2)
            stream = await client.fetch("/again")
            assert (stream.status, bytes(stream.data)) == (200, b"/again")
            await client.close()
        await pool.close()
    assert len(unanswered) == 1, unanswered
    assert len(connections) == 3


async def test_an_interim_response_then_a_final_one_in_pieces_is_relayed_whole() -> None:
    """100 Continue and the first part of the final response in one read, the rest later: the interim
    response's end is not taken for the final response's."""

    async def serve_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"56789")
        await writer.drain()
        await reader.read()

    async with raw_server(serve_conn) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(proxy(pool)) as server:
            client = await H2Peer.connect(server.port)
            stream = await client.fetch("/interim")
            assert (stream.ended, stream.status, bytes(stream.data)) == (True, 200, b"0123456789")
            await client.close()
        await pool.close()


async def app_limited_to_5(peer: H2Peer, stream: Stream) -> None:
    await asyncio.sleep(0.02)  # long enough for the streams to overlap
    await peer.respond(stream.id, 200, body=(stream.header(":path") or "").encode())


FIVE_STREAMS = {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 5}


async def test_the_upstreams_max_concurrent_streams_is_respected() -> None:
    async with h2_upstream(app_limited_to_5, settings=FIVE_STREAMS) as upstream:
        pool = H2UpstreamPool("127.0.0.1", upstream.port)
        async with engine(proxy(pool)) as server:
            client = await H2Peer.connect(server.port)
            warm = await client.fetch("/warm")  # the pool has a connection and knows the upstream's SETTINGS
            assert warm.status == 200
            ids = {client.request(f"/s/{i}"): i for i in range(50)}
            for sid, i in ids.items():
                stream = await client.response(sid)
                assert stream.status == 200, stream
                assert bytes(stream.data) == f"/s/{i}".encode()
            assert len(upstream.peers) > 1  # 50 streams at once do not fit in one connection
            assert all(peer.protocol_error is None for peer in upstream.peers)
            await client.close()
        await pool.close()


async def test_a_burst_to_a_new_upstream_connection_waits_for_its_settings() -> None:
    """A scale-from-zero burst: the requests arrive together, before any connection to the new pod."""
    async with h2_upstream(app_limited_to_5, settings=FIVE_STREAMS, preface_delay=0.02) as upstream:
        pool = H2UpstreamPool("127.0.0.1", upstream.port)
        async with engine(proxy(pool)) as server:
            client = await H2Peer.connect(server.port)
            ids = [client.request(f"/s/{i}") for i in range(20)]
            statuses = [(await client.response(sid)).status for sid in ids]
            assert statuses == [200] * 20
            await client.close()
        await pool.close()


# -- 4. flow control -----------------------------------------------------------------------------------------

BIG = os.urandom(5 * MIB)


async def test_5_mib_each_way_h2_to_h2() -> None:
    async with engine(echo_h2) as upstream:
        pool = H2UpstreamPool("127.0.0.1", upstream.port)
        async with engine(proxy(pool)) as server:
            client = await H2Peer.connect(server.port)
            stream = await client.fetch("/up", method="POST", body=BIG)
            assert stream.ended
            assert stream.status == 200
            assert stream.header("content-length") == str(len(BIG))
            assert hashlib.sha256(stream.data).digest() == hashlib.sha256(BIG).digest()
            await client.close()
        await pool.close()


async def test_5_mib_each_way_h1_to_h2() -> None:
    async with engine(echo_h2) as upstream:
        pool = H2UpstreamPool("127.0.0.1", upstream.port)
        async with engine(proxy(pool)) as server:
            raw = await RawClient.connect(server.port)
            await raw.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(BIG))
            for i in range(0, len(BIG), MIB):
                await raw.send(BIG[i : i + MIB])
            response = await raw.read_response()
            assert response.status == 200
            assert response.header("content-length") == str(len(BIG))
            assert response.header("x-version") == "2"
            assert hashlib.sha256(response.body).digest() == hashlib.sha256(BIG).digest()
            # The connection stays usable (the HTTP/2 upstream stream was completed, not reset).
            response = await raw.request(get("/again"))
            assert response.status == 200
            assert response.header("x-path") == "/again"
            await raw.close()
        await pool.close()


async def test_5_mib_each_way_h2_to_h1() -> None:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=body, headers={"x-chunked": str(request.headers.get("transfer-encoding"))})

    app = web.Application(client_max_size=10 * MIB)
    app.router.add_post("/up", echo)
    async with app_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(proxy(pool)) as server:
            client = await H2Peer.connect(server.port)
            stream = await client.fetch("/up", method="POST", body=BIG)
            assert stream.ended
            assert stream.status == 200
            assert stream.header("x-chunked") == "chunked"  # no Content-Length from the client
            assert hashlib.sha256(stream.data).digest() == hashlib.sha256(BIG).digest()
            await client.close()
        await pool.close()


async def test_a_stream_nobody_reads_stalls_neither_the_others_nor_memory() -> None:
    sent = 0
    piece = os.urandom(64 * 1024)
    size = 50 * MIB

    async def app(peer: H2Peer, stream: Stream) -> None:
        nonlocal sent
        if stream.header(":path") == "/big":
            peer.send_headers(stream.id, [(b":status", b"200")])
            with contextlib.suppress(StreamGone):
                while sent < size:
                    await peer.send_data(stream.id, piece)
                    sent += len(piece)
            return
        await peer.respond(stream.id, 200, body=b"small")

    async with h2_upstream(app) as upstream:
        pool = H2UpstreamPool("127.0.0.1", upstream.port)
        async with engine(proxy(pool)) as server:
            client = await H2Peer.connect(server.port)
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                big = client.request("/big")
                client.streams[big].hold = True
                client.streams[big].keep = False
                await client.wait_for(lambda: client.streams[big].received >= 65535)
                small = await client.fetch("/small", timeout=2)
                assert small.ended
                assert bytes(small.data) == b"small"
                # Let the stuck stream fill whatever buffers it can, until the upstream can send no more.
                last = -1
                while sent != last:
                    last = sent
                    await asyncio.sleep(0.05)
                growth = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            assert client.streams[big].received <= 65535, "the client's stream window was overrun"
            assert sent < 8 * MIB, f"the upstream could send {sent / MIB:.1f} MiB to a stalled client"
            assert growth < 8 * MIB, f"memory grew by {growth / MIB:.1f} MiB"
            # The stalled stream still works once its reader reads.
            client.release(big)
            client.reset(big)
            await client.close()
        await pool.close()


# -- 5. trailers ---------------------------------------------------------------------------------------------


async def test_upstream_trailers_reach_the_h2_client() -> None:
    seen: list[Stream] = []

    async def grpc_app(peer: H2Peer, stream: Stream) -> None:
        seen.append(stream)
        request = await peer.body(stream.id)
        await peer.respond(
            stream.id,
            200,
            headers=[("content-type", "application/grpc")],
            body=request,
            trailers=[(b"grpc-status", b"0"), (b"grpc-message", b"fine")],
        )

    async with h2_upstream(grpc_app) as upstream:
        pool = H2UpstreamPool("127.0.0.1", upstream.port)
        async with engine(proxy(pool)) as server:
            client = await H2Peer.connect(server.port)
            message = b"\x00\x00\x00\x00\x05hello"
            stream = await client.fetch(
                "/pkg.Svc/Call",
                method="POST",
                body=message,
                extra=[("content-type", "application/grpc"), ("te", "trailers")],
            )
            assert stream.ended
            assert stream.reset_code is None
            assert stream.status == 200
            assert bytes(stream.data) == message
            assert stream.trailer("grpc-status") == "0"
            assert stream.trailer("grpc-message") == "fine"
            assert stream.header("grpc-status") is None  # trailers, not headers
            assert seen[0].header("te") == "trailers"  # gRPC servers refuse requests without it
            await client.close()
        await pool.close()


async def test_upstream_trailers_are_dropped_for_an_http11_client() -> None:
    async def grpc_app(peer: H2Peer, stream: Stream) -> None:
        await peer.respond(stream.id, 200, body=b"payload", trailers=[(b"grpc-status", b"0")])

    async with h2_upstream(grpc_app) as upstream:
        pool = H2UpstreamPool("127.0.0.1", upstream.port)
        async with engine(proxy(pool)) as server:
            raw = await RawClient.connect(server.port)
            response = await raw.request(get("/"))
            assert response.status == 200
            assert response.chunked  # no Content-Length from the upstream
            assert response.body == b"payload"
            assert response.trailers == []
            again = await raw.request(get("/"))  # the chunked body ended cleanly
            assert again.body == b"payload"
            await raw.close()
        await pool.close()


# -- 6. RST_STREAM -------------------------------------------------------------------------------------------


async def test_a_client_reset_cancels_its_stream_only() -> None:
    upstream_resets: dict[str, int] = {}
    go = asyncio.Event()
    cancelled: list[str] = []

    async def app(peer: H2Peer, stream: Stream) -> None:
        path = stream.header(":path") or ""
        if path == "/slow":
            peer.send_headers(stream.id, [(b":status", b"200")])
            await peer.send_data(stream.id, b"first")
            await peer.wait_for(lambda: stream.reset_code is not None)
            upstream_resets[path] = stream.reset_code or 0
            return
        await go.wait()
        await peer.respond(stream.id, 200, body=b"steady")

    async def handler(ex: AnyExchange) -> None:
        try:
            await proxy(pool)(ex)
        except asyncio.CancelledError:
            cancelled.append(ex.request.target)
            raise

    async with h2_upstream(app) as upstream:
        pool = H2UpstreamPool("127.0.0.1", upstream.port)
        async with engine(handler) as server:
            client = await H2Peer.connect(server.port)
            slow = client.request("/slow")
            steady = client.request("/steady")
            await client.wait_for(lambda: bytes(client.streams[slow].data) == b"first")
            client.reset(slow)
            await eventually(lambda: "/slow" in upstream_resets, 2)
            assert upstream_resets["/slow"] == ErrorCodes.CANCEL
            await eventually(lambda: cancelled == ["/slow"], 2)
            go.set()
            stream = await client.response(steady)
            assert stream.ended
            assert bytes(stream.data) == b"steady"
            assert not client.streams[steady].reset_code
            await client.close()
        await pool.close()


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(ErrorCodes.INTERNAL_ERROR, id="internal-error"),
        pytest.param(ErrorCodes.CANCEL, id="cancel"),
        pytest.param(ErrorCodes.NO_ERROR, id="no-error-mid-body"),
    ],
)
async def test_an_upstream_reset_mid_response_resets_the_client_stream(code: int) -> None:
    async def app(peer: H2Peer, stream: Stream) -> None:
        peer.send_headers(stream.id, [(b":status", b"200"), (b"content-length", b"100")])
        await peer.send_data(stream.id, b"partial")
        await asyncio.sleep(0.01)  # the partial body goes out first
        peer.reset(stream.id, code)

    async with h2_upstream(app) as upstream:
        pool = H2UpstreamPool("127.0.0.1", upstream.port)
        async with engine(proxy(pool)) as server:
            client = await H2Peer.connect(server.port)
            stream = await client.fetch("/")
            assert stream.status == 200
            assert not stream.ended, "an incomplete response looked complete"
            assert stream.reset_code is not None
            if code != ErrorCodes.NO_ERROR:
                assert stream.reset_code == code
            else:
                assert stream.reset_code != ErrorCodes.NO_ERROR
            assert bytes(stream.data) == b"partial"
            after = await client.fetch("/")  # the connection goes on
            assert after.status == 200
            await client.close()
        await pool.close()


@pytest.mark.parametrize("client_version", ["2", "1.1"])
async def test_refused_stream_before_the_response_is_an_upstream_connect_error(client_version: str) -> None:
    errors: list[Exception] = []

    async def app(peer: H2Peer, stream: Stream) -> None:
        peer.reset(stream.id, ErrorCodes.REFUSED_STREAM)

    async def handler(ex: AnyExchange) -> None:
        try:
            await proxy(pool)(ex)
        except UpstreamConnectError as exc:
            errors.append(exc)
            await ex.respond(503, body=b"elsewhere")

    async with h2_upstream(app) as upstream:
        pool = H2UpstreamPool("127.0.0.1", upstream.port)
        async with engine(handler) as server:
            if client_version == "2":
                client = await H2Peer.connect(server.port)
                stream = await client.fetch("/")
                assert (stream.status, bytes(stream.data)) == (503, b"elsewhere")
                await client.close()
            else:
                raw = await RawClient.connect(server.port)
                response = await raw.request(get())
                assert (response.status, response.body) == (503, b"elsewhere")
                await raw.close()
            assert len(errors) == 1
        await pool.close()


# -- 7. GOAWAY and draining ----------------------------------------------------------------------------------


async def test_upstream_goaway_lets_the_streams_in_flight_finish() -> None:
    arrived: list[tuple[H2Peer, Stream]] = []
    all_in = asyncio.Event()

    async def app(peer: H2Peer, stream: Stream) -> None:
        arrived.append((peer, stream))
        if len(arrived) == 3:
            all_in.set()
        await all_in.wait()
        if stream is arrived[0][1]:
            peer.send_goaway(max(s.id for _, s in arrived))
            await asyncio.sleep(0.01)  # the GOAWAY arrives before the responses
        else:
            await asyncio.sleep(0.02)
        await peer.respond(stream.id, 200, body=(stream.header(":path") or "").encode())

    async with h2_upstream(app) as upstream:
        pool = H2UpstreamPool("127.0.0.1", upstream.port)
        async with engine(proxy(pool)) as server:
            client = await H2Peer.connect(server.port)
            ids = [client.request(f"/{i}") for i in range(3)]
            for i, sid in enumerate(ids):
                stream = await client.response(sid)
                assert stream.ended, stream
                assert stream.status == 200, stream
                assert bytes(stream.data) == f"/{i}".encode()
            # New streams go to a new connection; the old one is closed once its streams are done.
            later = await client.fetch("/later")
            assert later.ended
            assert bytes(later.data) == b"/later"
            assert len(upstream.peers) == 2
            await upstream.peers[0].wait_closed(2)
            await client.close()
        await pool.close()


async def test_upstream_goaway_below_a_stream_makes_it_forwardable_elsewhere() -> None:
    arrived: list[Stream] = []
    both = asyncio.Event()
    errors: list[Exception] = []

    async def app(peer: H2Peer, stream: Stream) -> None:
        arrived.append(stream)
        if len(upstream.peers) > 1:
            await peer.respond(stream.id, 200, body=b"second connection")
            return
        if len(arrived) == 2:
            both.set()
        await both.wait()
        if stream is arrived[0]:
            peer.send_goaway(stream.id)  # the other stream was never processed
            await asyncio.sleep(0.01)
            await peer.respond(stream.id, 200, body=b"first connection")

    async def handler(ex: AnyExchange) -> None:
        try:
            await proxy(pool)(ex)
        except UpstreamConnectError as exc:
            errors.append(exc)
            await proxy(pool)(ex)  # nothing reached the upstream: safe to send again

    async with h2_upstream(app) as upstream:
        pool = H2UpstreamPool("127.0.0.1", upstream.port)
        async with engine(handler) as server:
            client = await H2Peer.connect(server.port)
            ids = [client.request("/a"), client.request("/b")]
            bodies = sorted([bytes((await client.response(sid)).data) for sid in ids])
            assert bodies == [b"first connection", b"second connection"]
            assert len(errors) == 1
            await client.close()
        await pool.close()


async def test_drain_sends_goaway_and_lets_the_streams_finish() -> None:
    release = asyncio.Event()
    started = 0

    async def handler(ex: AnyExchange) -> None:
        nonlocal started
        started += 1
        await release.wait()
        await ex.respond(200, body=ex.request.target.encode())

    async with engine(handler) as server:
        client = await H2Peer.connect(server.port)
        ids = [client.request("/1"), client.request("/2")]
        await eventually(lambda: started == 2, 2)
        drain = asyncio.create_task(server.drain(5))
        await client.wait_for(lambda: client.goaway is not None, 2)
        goaway = client.goaway
        assert goaway is not None
        assert goaway.error_code == ErrorCodes.NO_ERROR
        assert goaway.last_stream_id is not None
        assert goaway.last_stream_id >= max(ids)
        # A stream opened after the GOAWAY is refused (the client may retry it elsewhere).
        late = client.request("/late")
        stream = await client.response(late, 2)
        assert stream.reset_code == ErrorCodes.REFUSED_STREAM
        assert not drain.done()
        release.set()
        for i, sid in enumerate(ids, 1):
            stream = await client.response(sid)
            assert stream.ended
            assert bytes(stream.data) == f"/{i}".encode()
        await client.wait_closed(2)
        await asyncio.wait_for(drain, 2)
        assert server.connections == 0
        await client.close()


async def test_an_idle_h2_connection_is_closed_after_keep_alive_timeout() -> None:
    release = asyncio.Event()

    async def handler(ex: AnyExchange) -> None:
        await release.wait()
        await ex.respond(200, body=b"late")

    async with engine(handler, ServerLimits(keep_alive_timeout=0.05)) as server:
        client = await H2Peer.connect(server.port)
        sid = client.request("/")
        await asyncio.sleep(0.1)  # twice the idle timeout: a stream is open, so this is not idleness
        assert not client.closed
        release.set()
        stream = await client.response(sid)
        assert stream.ended
        assert bytes(stream.data) == b"late"
        await client.wait_closed(2)
        assert client.goaway is not None
        assert client.goaway.error_code == ErrorCodes.NO_ERROR
        await eventually(lambda: server.connections == 0, 2)
        await client.close()


# -- 8. protocol abuse ---------------------------------------------------------------------------------------


async def test_oversized_headers_are_refused_and_the_server_goes_on() -> None:
    handled = 0

    async def handler(ex: AnyExchange) -> None:
        nonlocal handled
        handled += 1
        await ex.respond(200)

    limits = ServerLimits(max_header_bytes=4096)
    async with engine(handler, limits) as server:
        client = await FrameClient.connect(server.port)
        block = request_block(extra=[("x-big", "v" * 8000)])
        await client.send(headers_frame(1, block))
        await client.send(bytes(PingFrame(0, b"sentinel").serialize()))
        await client.until_ping_ack(b"sentinel", 2)
        goaway = client.goaway()
        refused = (goaway is not None and goaway.error_code != ErrorCodes.NO_ERROR) or client.resets(1)
        assert refused or client.statuses(1) == [431], client.frames
        assert not client.ended(1) or client.statuses(1) == [431]
        assert handled == 0
        await client.close()
        await still_serves(server.port)
        await eventually(lambda: server.connections == 0, 2)


async def test_a_continuation_flood_closes_the_connection_in_bounded_memory() -> None:
    async with engine(local) as server:
        client = await FrameClient.connect(server.port)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            await client.send(headers_frame(1, request_block()[:3], end_headers=False))
            piece = continuation_frame(1, b"\x00" * 4096) * 50
            batches = 0
            while batches < 200 and await client.send(piece):  # up to 40 MB
                batches += 1
                await asyncio.sleep(0)
            goaway = await client.until_goaway(2)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        assert batches < 200, "the server read 40 MB of one header block"
        assert goaway is not None, client.frames
        assert goaway.error_code != ErrorCodes.NO_ERROR
        await client.until_closed(2)
        assert peak < 8 * MIB, f"memory peaked {peak / MIB:.1f} MiB above the start"
        await client.close()
        await still_serves(server.port)


async def test_rapid_reset_gets_enhance_your_calm() -> None:
    running = 0
    forever = asyncio.Event()

    async def handler(ex: AnyExchange) -> None:
        nonlocal running
        if ex.request.target == "/alive":
            await ex.respond(200)
            return
        running += 1
        try:
            await forever.wait()
        finally:
            running -= 1

    async with engine(handler) as server:
        bystander = await H2Peer.connect(server.port)
        client = await H2Peer.connect(server.port)
        await client.wait_for(lambda: client.conn.remote_settings.max_concurrent_streams == 250, 2)
        for _ in range(1000):
            if client.closed:
                break
            sid = client.request("/")
            client.reset(sid)
            if sid % 64 == 1:
                await asyncio.sleep(0)  # let the server read as a real attacker's stream would arrive
        await client.wait_closed(2)
        assert client.goaway is not None, "closed without GOAWAY"
        assert client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        await client.close()
        # Other connections are served; the reset streams' handlers were all cancelled.
        bystander_stream = bystander.request("/")
        await asyncio.sleep(0)
        await still_serves(server.port)
        await eventually(lambda: running == 1, 2)
        bystander.reset(bystander_stream)
        await eventually(lambda: running == 0, 2)
        await bystander.close()
        await eventually(lambda: server.connections == 0, 2)


async def test_resets_between_completed_streams_never_exhaust_the_budget() -> None:
    """A client that cancels many calls (a gRPC app's deadlines) but also completes some is no attacker."""
    forever = asyncio.Event()

    async def handler(ex: AnyExchange) -> None:
        if ex.request.target == "/done":
            await ex.respond(200)
            return
        await forever.wait()

    async with engine(handler) as server:
        client = await H2Peer.connect(server.port)
        for _ in range(3):
            for _ in range(150):  # under the budget of 200 in a row
                client.reset(client.request("/cancelled"))
            done = await client.fetch("/done")
            assert done.status == 200
        assert client.goaway is None
        assert not client.closed
        await client.close()


async def test_a_rapid_reset_burst_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """One attacking connection, one warning: a burst of resets must not flood the log."""

    async def handler(ex: AnyExchange) -> None:
        await asyncio.Event().wait()

    async with engine(handler) as server:
        client = await H2Peer.connect(server.port)
        await client.wait_for(lambda: client.conn.remote_settings.max_concurrent_streams == 250, 2)
        for _ in range(1000):  # one write: what an attacker's single segment burst looks like
            stream_id = client.conn.get_next_available_stream_id()
            client.conn.send_headers(
                stream_id,
                [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")],
            )
            client.conn.reset_stream(stream_id)
        client.flush()
        await client.wait_closed(2)
        assert client.goaway is not None
        assert client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        await client.close()
        await eventually(lambda: server.connections == 0, 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings[:3]


async def test_an_oversized_frame_is_refused_from_its_header() -> None:
    async with engine(local) as server:
        client = await FrameClient.connect(server.port)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            await client.send(b"\xff\xff\xff\x00\x00\x00\x00\x00\x01")
            pushed = 0
            while pushed < 4 * MIB and await client.send(b"\x00" * 65536):
                pushed += 65536
                await asyncio.sleep(0)
            goaway = await client.until_goaway(0.5)
            growth = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert goaway is not None, client.frames
        assert goaway.error_code == ErrorCodes.FRAME_SIZE_ERROR, client.frames
        assert growth < MIB, f"the server holds {growth / MIB:.1f} MiB of one frame it will refuse"
        await client.close()
        await still_serves(server.port)


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """One frame as bytes, whatever its type, flags and stream say."""
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


@pytest.mark.parametrize(
    ("garbage", "codes"),
    [
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            {ErrorCodes.PROTOCOL_ERROR, ErrorCodes.FRAME_SIZE_ERROR},
            id="http11-after-preface",
        ),
        pytest.param(frame(0x0, 0, 0, b"data"), {ErrorCodes.PROTOCOL_ERROR}, id="data-on-stream-0"),
        pytest.param(
            frame(0x1, 0x5, 2, request_block()), {ErrorCodes.PROTOCOL_ERROR}, id="even-stream-from-client"
        ),
        pytest.param(frame(0x8, 0, 0, b"\x00\x00\x00\x00"), {ErrorCodes.PROTOCOL_ERROR}, id="zero-window"),
        pytest.param(frame(0x4, 0, 0, b"\x00\x02\x00\x00\x00\x07"), {ErrorCodes.PROTOCOL_ERROR}, id="push-7"),
        pytest.param(frame(0x4, 0, 0, b"\x00\x02\x00"), {ErrorCodes.FRAME_SIZE_ERROR}, id="settings-size"),
        pytest.param(frame(0x6, 0, 0, b"1234"), {ErrorCodes.FRAME_SIZE_ERROR}, id="short-ping"),
        pytest.param(
            frame(0x1, 0x5, 1, b"\xff\xff\xff\xff"),
            {ErrorCodes.COMPRESSION_ERROR},
            id="bad-hpack",
        ),
        pytest.param(
            frame(0x9, 0x4, 1, request_block()), {ErrorCodes.PROTOCOL_ERROR}, id="naked-continuation"
        ),
    ],
)
async def test_garbage_after_the_preface_gets_goaway(garbage: bytes, codes: set[int]) -> None:
    async with engine(local) as server:
        client = await FrameClient.connect(server.port)
        await client.send(garbage)
        goaway = await client.until_goaway(1)
        assert goaway is not None, client.frames
        assert goaway.error_code in codes
        await client.until_closed(2)
        await client.close()
        await still_serves(server.port)
        await eventually(lambda: server.connections == 0, 2)


@pytest.mark.parametrize(
    ("block", "stream_level"),
    [
        pytest.param(request_block(path=None), False, id="no-path"),
        pytest.param(
            bytes(hpack.Encoder().encode([(":method", "GET"), (":path", "/"), (":authority", "a")])),
            False,
            id="no-scheme",
        ),
        pytest.param(request_block(authority=None), True, id="no-authority"),
        pytest.param(
            bytes(
                hpack.Encoder().encode(
                    [(":method", "GET"), (":scheme", "http"), (":path", "/"), ("connection", "close")]
                )
            ),
            False,
            id="no-authority-is-still-validated",  # a connection-specific header: h2's connection error
        ),
        pytest.param(request_block(path="relative"), True, id="relative-path"),
    ],
)
async def test_a_malformed_request_is_refused_not_handled(block: bytes, stream_level: bool) -> None:
    """A request no route can be found for: the stream is answered 400 or reset (`stream_level`), or, for
    what `h2` itself rejects, the connection gets GOAWAY PROTOCOL_ERROR (the engine documents h2's choice);
    the handler never sees it and the server goes on."""
    release = asyncio.Event()
    handled: list[str] = []

    async def handler(ex: AnyExchange) -> None:
        handled.append(ex.request.target)
        if ex.request.target == "/slow":
            await release.wait()
        await ex.respond(200)

    async with engine(handler) as server:
        client = await FrameClient.connect(server.port)
        await client.send(headers_frame(1, request_block("/slow")))
        await eventually(lambda: handled == ["/slow"], 2)
        await client.send(headers_frame(3, block) + bytes(PingFrame(0, b"sentinel").serialize()))
        await client.until_ping_ack(b"sentinel", 2)
        goaway = client.goaway()
        if stream_level:
            assert goaway is None, f"one malformed stream closed the connection: {goaway}"
            assert client.statuses(3) == [400] or client.resets(3) == [ErrorCodes.PROTOCOL_ERROR]
            release.set()
            await client.wait_for(lambda: client.ended(1), 2)
            assert client.statuses(1) == [200], "the other stream on the connection was lost"
        else:
            assert goaway is not None, client.frames
            assert goaway.error_code == ErrorCodes.PROTOCOL_ERROR, client.frames
            assert goaway.last_stream_id == 3 or goaway.last_stream_id == 1
        assert handled == ["/slow"]
        await client.close()
        await still_serves(server.port)
        await eventually(lambda: server.connections == 0, 2)


# -- 9. fuzzed frame sequences -------------------------------------------------------------------------------

STREAM_IDS = st.one_of(st.sampled_from([0, 1, 3, 5, 2, 0x7FFFFFFF]), st.integers(0, 0xFFFFFFFF))
VALID_BLOCK = request_block("/fuzz")


@st.composite
def fuzz_frame(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x4, 0x6, 0x7, 0x8, 0x9, 0xA]))
    flags = draw(st.one_of(st.sampled_from([0, 0x1, 0x4, 0x5, 0x8, 0x20, 0x25]), st.integers(0, 255)))
    stream_id = draw(STREAM_IDS)
    if kind in (0x1, 0x9):  # HEADERS, CONTINUATION
        payload = draw(st.one_of(st.just(VALID_BLOCK), st.binary(max_size=32)))
    elif kind == 0x0:  # DATA
        payload = draw(st.binary(max_size=64))
    elif kind == 0x2:  # PRIORITY
        payload = draw(st.binary(min_size=5, max_size=5))
    elif kind == 0x3:  # RST_STREAM
        payload = struct.pack(">I", draw(st.integers(0, 15)))
    elif kind == 0x4:  # SETTINGS
        pairs = draw(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 0xFFFFFFFF)), max_size=3))
        payload = b"".join(struct.pack(">HI", k, v) for k, v in pairs)
    elif kind == 0x6:  # PING
        payload = draw(st.binary(min_size=8, max_size=8))
    elif kind == 0x7:  # GOAWAY
        payload = struct.pack(">II", draw(STREAM_IDS), draw(st.integers(0, 15)))
    elif kind == 0x8:  # WINDOW_UPDATE
        increment = draw(st.one_of(st.sampled_from([0, 1, 65535, 0x7FFFFFFF]), st.integers(0, 0xFFFFFFFF)))
        payload = struct.pack(">I", increment)
    else:  # an extension frame, to be ignored
        payload = draw(st.binary(max_size=16))
    return frame(kind, flags, stream_id, payload)


async def fuzz_handler(ex: AnyExchange) -> None:
    """Answers with a body larger than a stream's initial window, so some answers wait for WINDOW_UPDATE."""
    await ex.respond(200, body=b"x" * 100_000)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(fuzz_frame(), min_size=1, max_size=8))
async def test_fuzzed_frames_never_break_the_server(frames: list[bytes]) -> None:
    baseline = len(asyncio.all_tasks())
    async with engine(fuzz_handler) as server:
        client = await FrameClient.connect(server.port)
        await client.send(b"".join(frames) + bytes(PingFrame(0, b"sentinel").serialize()))
        await client.until_ping_ack(b"sentinel", 2)
        await client.close()
        await eventually(lambda: server.connections == 0, 2)
        await eventually(lambda: len(asyncio.all_tasks()) <= baseline, 2)
        check = await H2Peer.connect(server.port)
        stream = await check.fetch("/")
        assert stream.ended
        assert stream.status == 200
        assert len(stream.data) == 100_000
        await check.close()
        await eventually(lambda: server.connections == 0, 2)
    assert len(asyncio.all_tasks()) <= baseline
