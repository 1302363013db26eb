"""Forwarding through the engine to a real aiohttp upstream, checked with raw sockets on the client side."""

from __future__ import annotations

import asyncio

from aiohttp import web

from serving.http import (
    Exchange,
    ForwardTimeouts,
    ResponseStartTimeout,
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
)
from tests.unit.serving.http.rawhttp import RawClient, app_server, engine, forwarder, get


def echo_app() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(
            body=body,
            headers={
                "x-method": request.method,
                "x-path": request.path_qs,
                "x-seen": ",".join(sorted(k.lower() for k in request.headers)),
                "x-peer-port": str(request.transport.get_extra_info("peername")[1])
                if request.transport
                else "",
            },
        )

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(5):
            await response.write(b"part%d;" % i)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/stream", stream)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def test_get_is_forwarded_and_the_response_relayed() -> None:
    async with app_server(echo_app()) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            response = await client.request(get("/a/b?q=1"))
            assert response.status == 200
            assert response.header("x-path") == "/a/b?q=1"
            assert response.header("x-method") == "GET"
            assert response.body == b""
            await client.close()
        await pool.close()


async def test_hop_by_hop_headers_are_not_forwarded() -> None:
    async with app_server(echo_app()) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            response = await client.request(
                get(
                    extra="Connection: keep-alive, X-Private\r\nX-Private: 1\r\nKeep-Alive: 5\r\n"
                    "TE: trailers\r\nX-End: 2\r\n"
                )
            )
            seen = (response.header("x-seen") or "").split(",")
            assert "x-end" in seen
            assert "x-private" not in seen
            assert "keep-alive" not in seen
            assert "te" not in seen
            await client.close()
        await pool.close()


async def test_keep_alive_connections_are_reused_both_sides() -> None:
    async with app_server(echo_app()) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            ports = set()
            for _ in range(5):
                response = await client.request(get())
                assert response.status == 200
                ports.add(response.header("x-peer-port"))
            assert len(ports) == 1, "one pooled upstream connection serves sequential requests"
            assert pool.idle_count == 1
            await client.close()
        await pool.close()


async def test_request_body_with_content_length_is_streamed() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    async with app_server(echo_app()) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            await client.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
            for i in range(0, len(body), 100_000):
                await client.send(body[i : i + 100_000])
            response = await client.read_response()
            assert response.status == 200
            assert response.body == body
            await client.close()
        await pool.close()


async def test_chunked_request_body_is_streamed() -> None:
    async with app_server(echo_app()) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            response = await client.request(
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
            assert response.body == b"hello world"
            await client.close()
        await pool.close()


async def test_chunked_response_is_rechunked() -> None:
    async with app_server(echo_app()) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            response = await client.request(get("/stream"))
            assert response.chunked
            assert response.body == b"part0;part1;part2;part3;part4;"
            again = await client.request(get("/stream"))
            assert again.body == response.body
            await client.close()
        await pool.close()


async def test_local_response_and_response_headers() -> None:
    async with app_server(echo_app()) as port:
        pool = UpstreamPool("127.0.0.1", port)

        async def handler(ex: Exchange) -> None:
            if ex.request.target == "/local":
                await ex.respond(203, [("x-local", "yes")], b"local body")
            else:
                await ex.forward(pool, ex.request.headers, response_headers=[("x-via", "engine")])

        async with engine(handler) as eport:
            client = await RawClient.connect(eport)
            local = await client.request(get("/local"))
            assert (local.status, local.header("x-local"), local.body) == (203, "yes", b"local body")
            forwarded = await client.request(get("/x"))
            assert forwarded.header("x-via") == "engine"
            await client.close()
        await pool.close()


async def test_connect_refused_raises_connect_error() -> None:
    async with app_server(echo_app()) as port:
        pass  # the port is free again: nothing listens
    pool = UpstreamPool("127.0.0.1", port)
    errors: list[BaseException] = []

    async def handler(ex: Exchange) -> None:
        try:
            await ex.forward(pool, ex.request.headers)
        except UpstreamConnectError as exc:
            errors.append(exc)
            assert not ex.response_started
            await ex.respond(502, body=b"connection refused")

    async with engine(handler) as eport:
        client = await RawClient.connect(eport)
        response = await client.request(get())
        assert response.status == 502
        assert len(errors) == 1
        await client.close()


async def test_response_start_timeout() -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_get("/", slow)
    async with app_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        seen: list[BaseException] = []

        async def handler(ex: Exchange) -> None:
            try:
                await ex.forward(pool, ex.request.headers, timeouts=ForwardTimeouts(response_start=0.05))
            except (ResponseStartTimeout, UpstreamError) as exc:
                seen.append(exc)
                await ex.respond(504)

        async with engine(handler) as eport:
            client = await RawClient.connect(eport)
            response = await client.request(get())
            assert response.status == 504
            assert isinstance(seen[0], ResponseStartTimeout)
            await client.close()
            release.set()
        await pool.close()


async def test_handler_exception_gives_500_and_the_server_keeps_serving() -> None:
    calls = 0

    async def handler(ex: Exchange) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug")
        await ex.respond(200, body=b"fine")

    async with engine(handler) as eport:
        client = await RawClient.connect(eport)
        response = await client.request(get())
        assert response.status == 500
        assert await client.closed()
        await client.close()
        client = await RawClient.connect(eport)
        response = await client.request(get())
        assert (response.status, response.body) == (200, b"fine")
        await client.close()


async def test_handler_that_never_responds_gives_500() -> None:
    async def handler(ex: Exchange) -> None:
        return

    async with engine(handler) as eport:
        client = await RawClient.connect(eport)
        response = await client.request(get())
        assert response.status == 500
        await client.close()
