"""The client side of the engine: parsing, pipelining, framing of local responses, limits and timeouts."""

from __future__ import annotations

import asyncio

import pytest

from serving.http import Exchange, ServerLimits, serve
from tests.unit.serving.http.rawhttp import RawClient, engine, get


async def echo_target(ex: Exchange) -> None:
    """Answers with the request target, after a delay given in the query (to expose ordering bugs)."""
    target = ex.request.target
    if "delay=" in target:
        await asyncio.sleep(float(target.split("delay=")[1]))
    await ex.respond(200, [("x-target", target)], target.encode())


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with engine(echo_target) as port:
        client = await RawClient.connect(port)
        await client.send(get("/1?delay=0.03") + get("/2") + get("/3?delay=0.01") + get("/4"))
        bodies = [(await client.read_response()).body for _ in range(4)]
        assert bodies == [b"/1?delay=0.03", b"/2", b"/3?delay=0.01", b"/4"]
        await client.close()


async def test_pipelined_requests_split_across_reads() -> None:
    data = get("/a") + b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + get("/c")
    async with engine(echo_target) as port:
        client = await RawClient.connect(port)
        for i in range(0, len(data), 7):
            await client.send(data[i : i + 7])
            await asyncio.sleep(0.001)
        bodies = [(await client.read_response()).body for _ in range(3)]
        assert bodies == [b"/a", b"/b", b"/c"]
        await client.close()


async def test_http10_closes_unless_keep_alive_is_asked() -> None:
    async with engine(echo_target) as port:
        client = await RawClient.connect(port)
        response = await client.request(b"GET /old HTTP/1.0\r\n\r\n")
        assert response.body == b"/old"
        assert await client.closed()
        await client.close()

        client = await RawClient.connect(port)
        response = await client.request(b"GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert response.header("connection") == "keep-alive"
        response = await client.request(b"GET /ka2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert response.body == b"/ka2"
        await client.close()


@pytest.mark.parametrize(
    "connection",
    [b"", b"Connection: keep-alive\r\n", b"Proxy-Connection: keep-alive\r\n", b"Connection: close\r\n"],
)
@pytest.mark.parametrize("version", [b"0.9", b"1.0", b"1.1", b"2.0"])
async def test_the_request_version_is_the_one_sent_whatever_connection_says(
    version: bytes, connection: bytes
) -> None:
    """The usual request's version is inferred from llhttp's keep-alive answer; every version llhttp accepts,
    with or without a Connection field, must still come out as sent, or be refused."""
    seen: list[str] = []

    async def handler(ex: Exchange) -> None:
        seen.append(ex.request.version)
        await ex.respond(200, body=ex.request.version.encode())

    async with engine(handler) as port:
        client = await RawClient.connect(port)
        response = await client.request(b"GET / HTTP/" + version + b"\r\nHost: a\r\n" + connection + b"\r\n")
        if version in (b"1.0", b"1.1"):
            assert (response.status, response.body) == (200, version)
            assert seen == [version.decode()]
        else:
            assert response.status == 400
            assert seen == []
        await client.close()


async def test_connection_close_is_honoured() -> None:
    async with engine(echo_target) as port:
        client = await RawClient.connect(port)
        response = await client.request(get("/x", extra="Connection: close\r\n"))
        assert response.header("connection") == "close"
        assert await client.closed()
        await client.close()


@pytest.mark.parametrize(
    ("method", "status", "length"),
    [
        pytest.param("HEAD", 200, "4", id="head"),
        pytest.param("GET", 204, None, id="no-content"),
        pytest.param("GET", 304, None, id="not-modified"),
    ],
)
async def test_local_responses_without_body(method: str, status: int, length: str | None) -> None:
    async def handler(ex: Exchange) -> None:
        await ex.respond(status, body=b"body")

    async with engine(handler) as port:
        client = await RawClient.connect(port)
        await client.send(f"{method} / HTTP/1.1\r\nHost: a\r\n\r\n".encode() + get())
        first = await client.read_response(head=True)
        assert first.status == status
        assert first.header("content-length") == length
        second = await client.read_response(head=True)  # the next response follows at once: no body bytes
        assert second.status == status
        await client.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            id="content-length-and-transfer-encoding",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
            id="transfer-encoding-and-content-length",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            id="differing-content-lengths",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd",
            id="content-length-list",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            id="bad-chunk-size",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
            id="chunk-longer-than-its-size",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
            id="transfer-encoding-not-chunked",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            id="chunked-not-last",
        ),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n b\r\n\r\n", id="obs-fold"),
        pytest.param(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", id="space-before-colon"),
        pytest.param(b"GET / HTTP/1.1\nHost: a\n\n", id="bare-lf"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", id="negative-length"),
        pytest.param(b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", id="nul-in-target"),
        pytest.param(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", id="http2-version"),
        pytest.param(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", id="connect"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", id="tls-hello"),
    ],
)
async def test_malformed_and_smuggling_requests_get_400_and_close(request_bytes: bytes) -> None:
    handled: list[str] = []

    async def handler(ex: Exchange) -> None:
        handled.append(ex.request.target)
        await ex.respond(200)

    async with engine(handler) as port:
        client = await RawClient.connect(port)
        response = await client.request(request_bytes)
        assert response.status == 400
        assert response.header("connection") == "close"
        assert await client.closed()
        assert handled == []
        await client.close()
        # The server keeps serving.
        client = await RawClient.connect(port)
        assert (await client.request(get())).status == 200
        await client.close()


async def test_bad_request_after_a_good_one_is_answered_after_it() -> None:
    async with engine(echo_target) as port:
        client = await RawClient.connect(port)
        await client.send(get("/ok?delay=0.02") + b"GET / HTTP/1.1\r\nHost : a\r\n\r\n")
        first = await client.read_response()
        assert first.body == b"/ok?delay=0.02"
        second = await client.read_response()
        assert second.status == 400
        assert await client.closed()
        await client.close()


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param("".join(f"X-H{i}: v\r\n" for i in range(101)), id="too-many-headers"),
        pytest.param("X-Big: " + "a" * 70_000 + "\r\n", id="one-huge-header"),
        pytest.param("".join(f"X-H{i}: {'b' * 1000}\r\n" for i in range(70)), id="head-too-large"),
    ],
)
async def test_oversized_heads_get_431(extra: str) -> None:
    async with engine(echo_target) as port:
        client = await RawClient.connect(port)
        response = await client.request(get(extra=extra))
        assert response.status == 431
        assert await client.closed()
        await client.close()


async def test_huge_target_gets_431() -> None:
    async with engine(echo_target) as port:
        client = await RawClient.connect(port)
        response = await client.request(get("/" + "a" * 70_000))
        assert response.status == 431
        await client.close()


async def test_head_just_under_the_limits_is_served() -> None:
    extra = "".join(f"X-H{i}: {'c' * 500}\r\n" for i in range(99))
    async with engine(echo_target) as port:
        client = await RawClient.connect(port)
        response = await client.request(get("/fits", extra=extra))
        assert response.status == 200
        await client.close()


async def test_slow_request_head_is_cut_off() -> None:
    limits = ServerLimits(header_read_timeout=0.2)
    async with engine(echo_target, limits) as port:
        client = await RawClient.connect(port)
        await client.send(b"GET / HTTP/1.1\r\n")
        for _ in range(3):
            await asyncio.sleep(0.05)
            await client.send(b"X-Drip: 1\r\n")
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await client.closed()
        assert loop.time() - started < 5
        await client.close()


async def test_idle_keep_alive_connection_is_closed() -> None:
    limits = ServerLimits(keep_alive_timeout=0.1)
    async with engine(echo_target, limits) as port:
        client = await RawClient.connect(port)
        assert (await client.request(get())).status == 200
        assert await client.closed()
        await client.close()


async def test_busy_connection_is_not_cut_by_the_head_timeout() -> None:
    limits = ServerLimits(header_read_timeout=0.05, keep_alive_timeout=0.05)
    async with engine(echo_target, limits) as port:
        client = await RawClient.connect(port)
        for _ in range(3):
            response = await client.request(get("/?delay=0.08"))
            assert response.status == 200
        await client.close()


async def test_expect_100_continue_without_reading_the_body() -> None:
    async def handler(ex: Exchange) -> None:
        await ex.respond(413, body=b"too big")

    async with engine(handler) as port:
        client = await RawClient.connect(port)
        await client.send(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
        )
        response = await client.read_response(interim=True)
        assert response.status == 413
        assert response.header("connection") == "close"
        assert await client.closed()
        await client.close()


async def test_drain_finishes_in_flight_requests_then_closes() -> None:
    started = asyncio.Event()

    async def handler(ex: Exchange) -> None:
        started.set()
        await asyncio.sleep(0.05)
        await ex.respond(200, body=b"done")

    server = await serve(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    busy = await RawClient.connect(port)
    idle = await RawClient.connect(port)
    assert (await idle.request(get())).status == 200
    started.clear()
    await busy.send(get())
    await started.wait()
    await server.drain(timeout=5)
    response = await busy.read_response()
    assert (response.status, response.body) == (200, b"done")
    assert response.header("connection") == "close"
    assert await idle.closed()
    await busy.close()
    await idle.close()


async def test_drain_aborts_what_does_not_finish_in_time() -> None:
    cancelled = asyncio.Event()

    async def handler(ex: Exchange) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = await serve(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await RawClient.connect(port)
    await client.send(get())
    await asyncio.sleep(0.01)
    await server.drain(timeout=0.05)
    assert await client.closed()
    await asyncio.wait_for(cancelled.wait(), 5)
    await client.close()


async def test_a_connection_runs_its_requests_in_one_task_that_ends_with_it() -> None:
    tasks: list[asyncio.Task[object] | None] = []

    async def handler(ex: Exchange) -> None:
        tasks.append(asyncio.current_task())
        await ex.respond(200, body=b"ok")

    def pending() -> set[asyncio.Task[object]]:
        return {t for t in asyncio.all_tasks() if t in tasks}

    async with engine(handler) as port:
        client = await RawClient.connect(port)
        for _ in range(3):
            assert (await client.request(get())).status == 200
        other = await RawClient.connect(port)
        assert (await other.request(get())).status == 200
        assert len(tasks) == 4
        assert len(set(tasks)) == 2  # one task per connection, reused between requests
        assert len(pending()) == 2  # both connections idle, their tasks waiting for a next request
        await client.close()
        await other.close()
        for _ in range(100):
            if not pending():
                break
            await asyncio.sleep(0.01)
        assert not pending()  # a closed idle connection leaves no task behind


async def test_a_timeout_in_one_request_leaves_the_next_on_the_same_connection_alone() -> None:
    async def handler(ex: Exchange) -> None:
        if ex.request.target == "/slow":
            try:
                async with asyncio.timeout(0.02):
                    await asyncio.sleep(5)
            except TimeoutError:
                await ex.respond(504, body=b"timed out")
                return
        await asyncio.sleep(0.05)  # longer than the first request's timeout: a stale one would cancel this
        task = asyncio.current_task()
        assert task is not None
        await ex.respond(200, body=str(task.cancelling()).encode())

    async with engine(handler) as port:
        client = await RawClient.connect(port)
        assert (await client.request(get("/slow"))).status == 504
        response = await client.request(get("/next"))
        assert (response.status, response.body) == (200, b"0")
        await client.close()


async def test_client_gone_mid_request_ends_the_connections_task() -> None:
    started = asyncio.Event()
    tasks: list[asyncio.Task[object] | None] = []

    async def handler(ex: Exchange) -> None:
        tasks.append(asyncio.current_task())
        started.set()
        await asyncio.sleep(5)
        await ex.respond(200)

    async with engine(handler) as port:
        client = await RawClient.connect(port)
        await client.send(get())
        await started.wait()
        await client.close()  # cancels the running handler, and with it the connection's task
        for _ in range(100):
            if all(t is not None and t.done() for t in tasks):
                break
            await asyncio.sleep(0.01)
        assert len(tasks) == 1
        task = tasks[0]
        assert task is not None
        assert task.cancelled()
