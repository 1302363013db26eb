"""The keep-alive stat client against a bare HTTP server whose answers the tests choose byte for byte."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest

from autoscaler.statclient import StatClient, StatFetchError
from serving.stat import PROTOBUF_CONTENT_TYPE, Stat, encode_stat

STAT = Stat(pod_name="pod-a", average_concurrent_requests=2.5, request_count=7.0)
BODY = encode_stat(STAT)
HEAD = f"HTTP/1.1 200 OK\r\nContent-Type: {PROTOBUF_CONTENT_TYPE}\r\nContent-Length: {len(BODY)}\r\n\r\n"
OK = HEAD.encode() + BODY


class Server(asyncio.Protocol):
    """Answers each request (a head ending in a blank line) with `Server.response`; counts connections."""

    response = OK
    connections = 0
    requests: ClassVar[list[bytes]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Server.connections += 1
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            Server.requests.append(head)
            if Server.response:
                self.transport.write(Server.response)  # type: ignore[attr-defined]  # a stream transport


@pytest.fixture
async def port() -> AsyncIterator[int]:
    Server.response, Server.connections, Server.requests = OK, 0, []
    server = await asyncio.get_running_loop().create_server(Server, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[StatClient]:
    stat_client = StatClient(timeout=2.0)
    try:
        yield stat_client
    finally:
        stat_client.close()


async def test_fetches_over_one_kept_alive_connection(port: int, client: StatClient) -> None:
    for _ in range(3):
        assert await client.fetch("127.0.0.1", port) == STAT
    assert Server.connections == 1
    assert Server.requests[0].startswith(b"GET /metrics HTTP/1.1\r\n")
    assert b"Accept: application/protobuf" in Server.requests[0]


async def test_reconnects_when_the_server_closes(port: int, client: StatClient) -> None:
    Server.response = OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    assert await client.fetch("127.0.0.1", port) == STAT
    assert await client.fetch("127.0.0.1", port) == STAT
    assert Server.connections == 2


async def test_chunked_body(port: int, client: StatClient) -> None:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {PROTOBUF_CONTENT_TYPE}\r\nTransfer-Encoding: chunked\r\n\r\n"
    Server.response = head.encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    assert await client.fetch("127.0.0.1", port) == STAT


@pytest.mark.parametrize(
    ("response", "message"),
    [
        pytest.param(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n", "HTTP 503", id="status"),
        pytest.param(
            OK.replace(b"application/protobuf", b"text/plain", 1), "not application/protobuf", id="type"
        ),
        pytest.param(b"NOT HTTP\r\n\r\n", "bad HTTP response", id="garbage"),
        pytest.param(
            f"HTTP/1.1 200 OK\r\nContent-Type: {PROTOBUF_CONTENT_TYPE}\r\nContent-Length: 3\r\n\r\n".encode()
            + b"\xff\xff\xff",
            "not a Stat",
            id="body",
        ),
    ],
)
async def test_bad_answers_raise(port: int, client: StatClient, response: bytes, message: str) -> None:
    Server.response = response
    with pytest.raises(StatFetchError, match=message):
        await client.fetch("127.0.0.1", port)


async def test_silence_times_out(port: int) -> None:
    Server.response = b""
    client = StatClient(timeout=0.05)
    try:
        with pytest.raises(TimeoutError):
            await client.fetch("127.0.0.1", port)
    finally:
        client.close()


async def test_refused_connection(client: StatClient) -> None:
    with pytest.raises(StatFetchError, match="cannot connect"):
        await client.fetch("127.0.0.1", 1)
