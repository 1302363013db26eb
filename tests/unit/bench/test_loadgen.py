from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from bench.load.generator import LoadGenerator, latency
from bench.load.sample import CLIENT_CAP, CONNECT, PROTOCOL, RESET, TIMEOUT
from bench.load.schedule import Shot, Target, constant_rate


@dataclass
class HeldServer:
    """A real HTTP server that holds every request until `release` is set (a server slower than any rate)."""

    port: int = 0
    arrived: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200


async def _serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@pytest.fixture
async def held() -> AsyncIterator[HeldServer]:
    server = HeldServer()

    async def handle(request: web.Request) -> web.Response:
        server.arrived += 1
        await server.release.wait()
        return web.Response(text="ok", status=server.status, headers=server.headers)

    async for port in _serve(handle):
        server.port = port
        yield server


async def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_slow_server_does_not_slow_the_schedule(held: HeldServer) -> None:
    target = Target(name="held", port=held.port)
    gen = LoadGenerator(timeout=30)
    running = asyncio.create_task(gen.run(constant_rate([target], rate=200, duration=0.1)))
    # Every one of the 20 requests reaches the server while none has been answered: open loop.
    await _wait_for(lambda: held.arrived == 20)
    assert gen.stats.completed == 0
    assert gen.stats.sent == 20
    held.release.set()
    samples = await running
    assert [s.status for s in samples] == [200] * 20
    assert gen.stats.connections_opened == 20
    # Latency runs from the scheduled time: the first request waited for the whole schedule to be sent.
    first = min(samples, key=lambda s: s.scheduled)
    assert first.scheduled == pytest.approx(0.0)
    assert first.latency >= max(s.scheduled for s in samples)


@pytest.mark.parametrize(
    ("scheduled", "sent", "done", "expected"),
    [
        pytest.param(10.0, 10.0, 10.1, 0.1, id="on-time"),
        pytest.param(10.0, 10.5, 10.6, 0.6, id="late-send-counts-its-lateness"),
        pytest.param(10.0, 9.9996, 10.0196, 0.02, id="early-send-counts-the-whole-exchange"),
    ],
)
def test_latency_runs_from_the_earlier_of_schedule_and_send(
    scheduled: float, sent: float, done: float, expected: float
) -> None:
    assert latency(scheduled, sent, done) == pytest.approx(expected)


async def test_schedule_is_rate_times_duration_cycling_targets() -> None:
    a, b = Target(name="a", port=1), Target(name="b", port=2)
    shots = list(constant_rate([a, b], rate=10, duration=0.5, start=2.0))
    assert [s.at for s in shots] == pytest.approx([2.0, 2.1, 2.2, 2.3, 2.4])
    assert [s.target.name for s in shots] == ["a", "b", "a", "b", "a"]
    assert list(constant_rate([a], rate=0, duration=5)) == []


async def test_server_timing_status_and_revision_are_recorded(held: HeldServer) -> None:
    held.release.set()
    held.status = 503
    held.headers = {"Server-Timing": "activator;dur=12.5", "X-Bench-Revision": "hello-00002"}
    gen = LoadGenerator()
    [sample] = await gen.run([Shot(0.0, Target(name="t", port=held.port))])
    assert sample.status == 503
    assert sample.activator_ms == 12.5
    assert sample.revision == "hello-00002"
    assert sample.nbytes == 2
    assert not sample.ok


async def test_keep_alive_connections_are_reused(held: HeldServer) -> None:
    held.release.set()
    target = Target(name="t", port=held.port)
    gen = LoadGenerator()
    # Far enough apart that each answer is back before the next send: one connection carries them all.
    samples = await gen.run([Shot(i * 0.02, target) for i in range(5)])
    assert all(s.ok for s in samples)
    assert gen.stats.connections_opened == 1


async def test_request_past_timeout_is_a_timeout_error(held: HeldServer) -> None:
    gen = LoadGenerator(timeout=0.1)
    samples = await gen.run([Shot(0.0, Target(name="t", port=held.port))])
    assert [(s.status, s.error) for s in samples] == [(0, TIMEOUT)]
    assert samples[0].latency >= 0.1
    held.release.set()


async def test_cap_on_outstanding_records_client_cap_errors_without_waiting(held: HeldServer) -> None:
    gen = LoadGenerator(timeout=30, max_outstanding=3)
    target = Target(name="t", port=held.port)
    shots = [Shot(0.0, target) for _ in range(5)]
    running = asyncio.create_task(gen.run(shots))
    await _wait_for(lambda: held.arrived == 3)
    held.release.set()
    samples = await running
    assert sorted(s.error or str(s.status) for s in samples) == ["200", "200", "200", CLIENT_CAP, CLIENT_CAP]
    assert gen.stats.planned == 5
    assert gen.stats.sent == 3


async def _ok(request: web.Request) -> web.Response:
    return web.Response()


async def test_refused_connection_is_a_connect_error() -> None:
    async for port in _serve(_ok):
        closed_port = port  # the server is gone after the loop: nothing listens there
    gen = LoadGenerator()
    [sample] = await gen.run([Shot(0.0, Target(name="t", port=closed_port))])
    assert (sample.status, sample.error) == (0, CONNECT)


async def test_post_body_reaches_the_server() -> None:
    got: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.Response(body=b"x" * 1000)

    async for port in _serve(handle):
        target = Target(name="t", port=port, method="POST", path="/p?x=1", body=b"hello")
        [sample] = await LoadGenerator().run([Shot(0.0, target)])
    assert got == [b"hello"]
    assert (sample.status, sample.nbytes) == (200, 1000)


async def test_request_on_a_keep_alive_connection_the_server_closed_is_sent_again() -> None:
    """The server answers the first request on a connection and drops the second unanswered (an idle
    close racing the request): the generator resends it on a fresh connection instead of failing it."""
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            await reader.readuntil(b"\r\n\r\n")
            served += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")  # the second request: dropped unanswered
        except asyncio.IncompleteReadError:
            pass  # the client closed the connection after its last request
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        target = Target(name="t", port=port)
        gen = LoadGenerator(timeout=5, resend_after_idle=0.02)
        samples = await gen.run([Shot(0.0, target), Shot(0.05, target)])
        assert [(s.status, s.error) for s in samples] == [(200, None), (200, None)]
        assert gen.stats.resent == 1
        assert gen.stats.connections_opened == 2
        # Busy connections (idle less than the threshold) that close unanswered are the server's failure.
        busy = LoadGenerator(timeout=5, resend_after_idle=10.0)
        samples = await busy.run([Shot(0.0, target), Shot(0.05, target)])
        assert [(s.status, s.error) for s in samples] == [(200, None), (0, RESET)]
        assert busy.stats.resent == 0
    assert served == 3


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        pytest.param(b"HTTP/1.0 200 OK\r\n\r\nbody until close", (200, None, 16), id="close-delimited"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", (0, RESET, 5), id="truncated"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxy", (200, None, 1), id="junk-after"),
        pytest.param(b"NOT HTTP\r\n\r\n", (0, PROTOCOL, 0), id="garbage"),
    ],
)
async def test_raw_responses(response: bytes, expected: tuple[int, str | None, int]) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(response)
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        target = Target(name="t", port=server.sockets[0].getsockname()[1])
        [sample] = await LoadGenerator(timeout=5).run([Shot(0.0, target)])
    assert (sample.status, sample.error, sample.nbytes) == expected


def test_target_refuses_traffic_off_loopback() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1 only"):
        Target(name="t", host="10.0.0.1", port=80)


def test_target_wire_format_carries_host_header() -> None:
    target = Target(name="t", port=80, host_header="hello.default.localhost", headers=(("X-A", "1"),))
    assert target.wire.startswith(b"GET / HTTP/1.1\r\nHost: hello.default.localhost\r\n")
    assert b"\r\nX-A: 1\r\n" in target.wire
    assert target.wire.endswith(b"\r\n\r\n")
