"""The lean delivery client against real servers on 127.0.0.1: keep-alive reuse, a stale connection sent
again once, close-delimited and chunked bodies, and failures as `ClientError`."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from eventing.client import Client, ClientError, Target

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    c = Client()
    yield c
    c.close()


async def serve(handler: Handler) -> tuple[asyncio.Server, int]:
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            await handler(reader, writer)
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def stop(server: asyncio.Server, client: Client) -> None:
    """The client's connections, then the server's (its handlers see the end of their connection)."""
    client.close()
    await asyncio.sleep(0.02)
    server.close()
    await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return head, await reader.readexactly(length)


def test_target_parsing() -> None:
    assert Target.parse("http://svc.ns.localhost:8080/a?b=1") == Target(
        "127.0.0.1", 8080, "svc.ns.localhost:8080", "/a?b=1"
    )
    assert Target.parse("http://example.com") == Target("example.com", 80, "example.com", "/")
    assert Target.parse("https://example.com/") is None
    assert Target.parse("http://user:pw@example.com/") is None


def test_an_alias_changes_where_a_target_connects_never_its_host() -> None:
    aliases = {
        "hello.default.svc.cluster.local": ("10.0.0.7", 8080),
        "127.0.0.1:9000": ("127.0.0.1", 9100),
    }
    assert Target.parse("http://hello.default.svc.cluster.local/p", aliases) == Target(
        "10.0.0.7", 8080, "hello.default.svc.cluster.local", "/p"
    )
    assert Target.parse("http://HELLO.default.svc.cluster.local/", aliases) == Target(
        "10.0.0.7", 8080, "HELLO.default.svc.cluster.local", "/"
    )
    # An alias names host and port as the URL writes them: another port of the same host is not it.
    assert Target.parse("http://127.0.0.1:9001/", aliases) == Target("127.0.0.1", 9001, "127.0.0.1:9001", "/")
    assert Target.parse("http://127.0.0.1:9000/ns/b", aliases) == Target(
        "127.0.0.1", 9100, "127.0.0.1:9000", "/ns/b"
    )
    assert Target.parse("http://other.default.svc.cluster.local/", aliases) == Target(
        "other.default.svc.cluster.local", 80, "other.default.svc.cluster.local", "/"
    )


async def test_keep_alive_connections_are_reused(client: Client) -> None:
    connections = 0
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                head, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            seen.append((head, body))
            writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nRetry-After: 3\r\n\r\nok")
            await writer.drain()

    server, port = await serve(handler)
    target = Target("127.0.0.1", port, "svc.default.localhost", "/path")
    for n in range(3):
        response = await client.post(target, [("ce-id", str(n))], b"body")
        assert (response.status, response.body, response.headers["retry-after"]) == (202, b"ok", "3")
    await stop(server, client)
    assert connections == 1
    head, body = seen[0]
    assert head.startswith(b"POST /path HTTP/1.1\r\nHost: svc.default.localhost\r\n")
    assert b"ce-id: 0\r\n" in head
    assert body == b"body"


async def test_a_stale_keep_alive_connection_is_retried_once(client: Client) -> None:
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(reader)
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()  # closes the kept-alive connection after one response, without saying so

    server, port = await serve(handler)
    target = Target("127.0.0.1", port, "h", "/")
    assert (await client.post(target, [], b"1")).status == 200
    await asyncio.sleep(0.05)
    assert (await client.post(target, [], b"2")).status == 200
    await stop(server, client)
    assert served == 2


async def test_chunked_and_close_delimited_bodies(client: Client) -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\nuntil-close",
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answers.pop(0))
        await writer.drain()
        writer.close()

    server, port = await serve(handler)
    target = Target("127.0.0.1", port, "h", "/")
    assert (await client.post(target, [], b"")).body == b"abcde"
    assert (await client.post(target, [], b"")).body == b"until-close"
    await stop(server, client)


async def test_failures_are_client_errors(client: Client) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
        await writer.drain()
        writer.close()

    server, port = await serve(hang_up)
    with pytest.raises(ClientError, match="closed before a whole response"):
        await client.post(Target("127.0.0.1", port, "h", "/"), [], b"")
    await stop(server, client)
    with pytest.raises(ClientError, match="cannot connect"):
        await client.post(Target("127.0.0.1", port, "h", "/"), [], b"")


@pytest.mark.parametrize(
    "header",
    [
        ("content-type", "a\r\nX-Evil: 1"),
        ("content-type", "a\nX-Evil: 1"),
        ("content-type", "a\rX-Evil: 1"),
        ("content-type", "a\0"),
        ("x-a\r\nx-evil", "1"),
        ("", "no name"),
    ],
)
async def test_a_header_that_would_split_the_head_is_refused(client: Client, header: tuple[str, str]) -> None:
    headers = [("ce-id", "1"), header, ("ce-type", "t")]
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        await client.post(Target("127.0.0.1", 9, "h", "/"), headers, b"")


async def test_a_response_later_than_the_timeout_fails_the_request_and_its_connection(client: Client) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        head, _ = await read_request(reader)
        if b"slow" in head:
            await asyncio.sleep(5)  # answers long after the client gave up
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await read_request(reader)

    server, port = await serve(handler)
    target = Target("127.0.0.1", port, "h", "/")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await client.post(target, [("x-mode", "slow")], b"", timeout=0.2)
    assert 0.15 < loop.time() - started < 2
    # The connection that timed out is not reused: the next request gets a new one, and its answer.
    response = await client.post(target, [], b"", timeout=2)
    assert (response.status, response.body, connections) == (200, b"ok", 2)
    await stop(server, client)


async def test_a_server_that_never_accepts_times_out(client: Client) -> None:
    # A listening socket whose backlog is full and never accepted: connecting, or the request after it,
    # never gets an answer.
    with socket.socket() as blocked:
        blocked.bind(("127.0.0.1", 0))
        blocked.listen(0)
        port = blocked.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):
                filler = socket.socket()
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
                fillers.append(filler)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                await client.post(Target("127.0.0.1", port, "h", "/"), [], b"", timeout=0.3)
            assert loop.time() - started < 2
        finally:
            for filler in fillers:
                filler.close()
