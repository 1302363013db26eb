"""The side servers' dispatcher: fixed paths answered by the engine, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from serving.http import Exchange
from serving.http.endpoints import TEXT, endpoints, run_endpoints
from tests.unit.serving.http.rawhttp import WAIT, RawClient, engine, get


async def hello(exchange: Exchange) -> None:
    await exchange.respond(200, (TEXT,), b"hello " + exchange.request.target.encode() + b"\n")


async def test_a_known_path_is_answered_whatever_its_query_and_unknown_ones_get_404() -> None:
    async with engine(endpoints({"/hello": hello})) as port:
        client = await RawClient.connect(port)
        first = await client.request(get("/hello?x=1"))
        second = await client.request(get("/other"))
        third = await client.request(get("/hello/"))
        await client.close()
    assert (first.status, first.body) == (200, b"hello /hello?x=1\n")
    assert first.header("content-type") == "text/plain; charset=utf-8"
    assert (second.status, second.body) == (404, b"404: Not Found\n")
    assert third.status == 404, "the match is exact"


async def test_head_gets_the_head_only_and_other_methods_get_405_with_allow() -> None:
    async with engine(endpoints({"/hello": hello})) as port:
        client = await RawClient.connect(port)
        head = await client.request(b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n", head=True)
        post = await client.request(b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde")
        after = await client.request(get("/hello"))
        await client.close()
    assert (head.status, head.body, head.header("content-length")) == (200, b"", "13")
    assert (post.status, post.header("allow")) == (405, "GET, HEAD")
    assert after.status == 200, "the connection goes on after a refused body that had fully arrived"


async def test_an_endpoint_that_fails_gets_a_500_and_the_server_goes_on() -> None:
    async def broken(exchange: Exchange) -> None:
        raise RuntimeError("boom")

    async with engine(endpoints({"/broken": broken, "/hello": hello})) as port:
        client = await RawClient.connect(port)
        failed = await client.request(get("/broken"))
        await client.close()
        client = await RawClient.connect(port)
        fine = await client.request(get("/hello"))
        await client.close()
    assert failed.status == 500
    assert fine.status == 200


async def test_a_taken_port_fails_the_task_with_the_servers_name() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"stats server cannot listen on 127.0.0.1:{port}"):
            await asyncio.wait_for(run_endpoints("stats", {"/hello": hello}, "127.0.0.1", port), WAIT)


async def test_cancelling_the_server_lets_a_request_in_flight_finish_first() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(exchange: Exchange) -> None:
        started.set()
        await release.wait()
        await exchange.respond(200, (), b"done\n")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = asyncio.create_task(run_endpoints("admin", {"/slow": slow}, "127.0.0.1", port))
    client = None
    for _ in range(100):  # until it listens
        with contextlib.suppress(OSError):
            client = await RawClient.connect(port)
            break
        await asyncio.sleep(0.01)
    assert client is not None
    await client.send(get("/slow"))
    await asyncio.wait_for(started.wait(), WAIT)
    server.cancel()
    await asyncio.sleep(0.05)
    assert not server.done(), "the server waits for the request in flight"
    release.set()
    response = await asyncio.wait_for(client.read_response(), WAIT)
    assert (response.status, response.body) == (200, b"done\n")
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(server, WAIT)
    assert server.cancelled()
    await client.close()
    with pytest.raises(ConnectionRefusedError):
        await RawClient.connect(port)
