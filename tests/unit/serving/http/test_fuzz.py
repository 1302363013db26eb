"""Random and mutated request bytes: the engine answers 400/431 (or a valid request's 200) or closes, and
keeps serving. The engine runs on its own loop in a thread so that hypothesis can drive plain sockets."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.http import Exchange, Server, ServerLimits, UpstreamError, UpstreamPool, serve
from serving.http.h2base import PREFACE
from tests.unit.serving.http.rawhttp import (
    RawClient,
    RawUpstream,
    engine,
    forwarder,
    get,
    two_gets_forwarded_to,
)
from tests.unit.serving.http.test_smuggling import recording_upstream

VALID = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /p?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.1\r\nHost: b\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
]
ALLOWED = {100, 200, 400, 431}


class EngineThread:
    """The engine on its own event loop, answering 200 "ok" (after reading nothing) to valid requests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[dict[str, Any]] = []
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(lambda _, context: self.errors.append(context))

        async def handler(ex: Exchange) -> None:
            await ex.respond(200, body=b"ok")

        async def start() -> Server:
            limits = ServerLimits(max_header_bytes=2048, max_headers=20, header_read_timeout=5)
            return await serve(handler, "127.0.0.1", 0, limits=limits)

        server = loop.run_until_complete(start())
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

    def __enter__(self) -> EngineThread:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def engine_thread() -> Iterator[EngineThread]:
    with EngineThread() as running:
        yield running


def exchange(port: int, data: bytes) -> bytes:
    """Send `data`, half-close, and return everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close while we still write
        received = bytearray()
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return bytes(received)


def statuses(data: bytes) -> list[int]:
    """Status codes of the responses in `data` (heads, bodies by Content-Length; nothing else expected)."""
    found = []
    while data:
        assert data.startswith(b"HTTP/1.1 "), data[:80]
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, data[:80]
        status = int(head[9:12])
        found.append(status)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if status in (100, 101, 204, 304) or (rest.startswith(b"HTTP/1.1 ") and length == len(b"ok")):
            length = 0  # no body, or the answer to a HEAD request (the handler's body is b"ok")
        data = rest[length:]
    return found


def still_serves(port: int) -> bool:
    reply = exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    return reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\nok")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "special"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "duplicate":
            end = data.find(b"\r\n", at)
            if end != -1:
                data[end + 2 : end + 2] = data[at : end + 2]
        else:
            data[at:at] = draw(
                st.sampled_from(
                    [
                        b"\r\n",
                        b"\n",
                        b"\r",
                        b"\x00",
                        b" ",
                        b"\t",
                        b":",
                        b"Content-Length: 3\r\n",
                        b"Transfer-Encoding: chunked\r\n",
                        b"\r\n \r\n",
                        b"ffffffffffffffffff\r\n",
                        b"0\r\n\r\n",
                    ]
                )
            )
    return bytes(data)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    token = st.text(alphabet="abcXYZ-_!~\x7f:; \t", min_size=0, max_size=12)
    method = draw(st.sampled_from(["GET", "POST", "PUT", "HEAD", "OPTIONS", "G@T", "", "get"]))
    target = draw(st.text(alphabet="/?#%ab =\x01\xff", min_size=0, max_size=20))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 ", "http/1.1", ""]))
    headers = draw(st.lists(st.tuples(token, token), max_size=25))
    lines = [f"{method} {target} {version}"] + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def check(engine_thread: EngineThread, data: bytes) -> None:
    reply = exchange(engine_thread.port, data)
    if data.startswith(PREFACE):
        # HTTP/2 by its preface (the fuzzer finds it among the code's constants): the server's SETTINGS
        # frame answers, then whatever the frames after it earn (test_h2.py fuzzes those).
        assert reply[3:4] == b"\x04", reply[:200]
    else:
        assert set(statuses(reply)) <= ALLOWED, reply[:200]
    assert engine_thread.errors == []
    assert still_serves(engine_thread.port)


@FUZZ
@given(data=st.binary(max_size=3000))
def test_random_bytes(engine_thread: EngineThread, data: bytes) -> None:
    check(engine_thread, data)


@FUZZ
@given(data=mutated())
def test_mutated_requests(engine_thread: EngineThread, data: bytes) -> None:
    check(engine_thread, data)


@FUZZ
@given(data=heads())
def test_generated_heads(engine_thread: EngineThread, data: bytes) -> None:
    check(engine_thread, data)


# -- regressions found by the coverage-guided fuzzer (benchmarks/fuzz_engine.py) ----------------------------


def test_requests_pipelined_before_a_bad_one_are_answered_before_its_400(engine_thread: EngineThread) -> None:
    """The 400 answers the bad request: written in place of a good one still queued, the client would take
    it for that one's answer."""
    good = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
    reply = exchange(engine_thread.port, good + good + b"GET /3 HTTP/1.1\r\nHost : a\r\n\r\n")
    assert statuses(reply) == [200, 200, 400]
    assert engine_thread.errors == []


async def test_a_client_leaving_while_requests_before_a_bad_one_run_is_noticed() -> None:
    """Reading goes on while they run, as it would without the bad request, so their handlers stop when the
    client goes away instead of running for nobody."""
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(ex: Exchange) -> None:
        if ex.request.target == "/1":
            await ex.respond(200)
            return
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with engine(handler) as port:
        client = await RawClient.connect(port)
        await client.send(get("/1") + get("/2") + b"GET /3 HTTP/1.1\r\nHost : a\r\n\r\n")
        assert (await client.read_response()).status == 200
        await asyncio.wait_for(started.wait(), 5)
        await client.close()
        await asyncio.wait_for(cancelled.wait(), 5)


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"HEAD / HTTP/1.1\r\n\r\n", id="no-host"),
        pytest.param(b"HEAD / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="two-hosts"),
        pytest.param(
            b"HEAD / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-body"
        ),
    ],
)
def test_an_error_answer_to_head_has_no_body(engine_thread: EngineThread, request_bytes: bytes) -> None:
    reply = exchange(engine_thread.port, request_bytes)
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b"\r\ncontent-length: 12\r\n" in reply
    assert reply.endswith(b"\r\n\r\n")


async def test_an_upstream_failure_answering_head_has_no_body() -> None:
    async def fail(ex: Exchange) -> None:
        raise UpstreamError("garbage from the upstream", response_started=False)

    async with engine(fail) as port:
        client = await RawClient.connect(port)
        response = await client.request(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", head=True)
        assert response.status == 502
        assert await client.closed()  # and nothing after the head
        await client.close()


async def test_every_transfer_encoding_field_is_relayed() -> None:
    """llhttp frames a body by the codings of all Transfer-Encoding fields; relayed with the first field's
    only (`gzip`), the request would reach the upstream without a framing it can read."""
    async with recording_upstream() as (recorder, port):
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            response = await client.request(
                b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"
                b"\r\n5\r\nhello\r\n0\r\n\r\n"
            )
            await client.close()
        await pool.close()
    assert response.status == 200
    assert recorder.errors == []
    assert [(r.target, r.header("transfer-encoding"), r.body) for r in recorder.requests] == [
        ("/p", "gzip, chunked", b"hello")
    ]


def _answering_twice(extra: bytes) -> RawUpstream:
    """An upstream that sends `extra` right behind each response, in the same write."""

    async def serve_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + extra)

    return serve_conn


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", id="response"),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\nraw", id="101"
        ),
    ],
)
async def test_a_response_behind_the_upstreams_answer_is_never_relayed(extra: bytes) -> None:
    """Relayed, it would be the client's answer to its next request."""
    first, second = await two_gets_forwarded_to(_answering_twice(extra))
    assert [(first.status, first.body), (second.status, second.body)] == [(200, b"ok"), (200, b"ok")]
