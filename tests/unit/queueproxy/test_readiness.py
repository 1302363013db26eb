from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestServer
from grpc_health.v1 import health as health_servicer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from queueproxy import h2probe
from queueproxy.probe import ProbeSpec
from queueproxy.readiness import USER_AGENT, Readiness
from serving.clock import FakeClock
from tests.unit.serving.http.rawh2 import H2Peer, Stream, h2_upstream


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fast(spec: ProbeSpec, port: int, **kwargs: object) -> Readiness:
    """Aggressive timings shrunk so that a failing poll gives up within a few tens of milliseconds."""
    return Readiness(
        spec,
        port,
        retry_interval=0.005,
        aggressive_attempt_timeout=0.1,
        aggressive_poll_timeout=0.03,
        **kwargs,  # type: ignore[arg-type]  # only `now` is passed
    )


def port_of(server: BaseTestServer) -> int:
    assert server.port is not None
    return server.port


class ProbedApp:
    """A real HTTP app whose probe endpoint answers `status` and records what each probe sent."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.calls: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append({**dict(request.headers), "path": request.path})
        await asyncio.sleep(self.delay)
        return web.Response(status=self.status)

    def server(self) -> TestServer:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        return TestServer(app, host="127.0.0.1")


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("127.0.0.1", id="address-bare-connect"),
        pytest.param("localhost", id="name-resolved-by-the-loop"),
    ],
)
async def test_tcp_probe_passes_when_the_app_listens(host: str) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    async with server:
        readiness = fast(ProbeSpec(host=host), server.sockets[0].getsockname()[1])
        assert await readiness.check() is True
        assert readiness.ready
        await readiness.close()


async def test_tcp_probe_fails_when_nothing_listens() -> None:
    readiness = fast(ProbeSpec(), closed_port())
    assert await readiness.check() is False
    await readiness.close()


async def test_tcp_probe_turns_ready_once_the_app_starts_listening() -> None:
    """The aggressive poll keeps trying: a port refused at first passes once something listens on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        readiness = Readiness(ProbeSpec(), port, retry_interval=0.005, aggressive_poll_timeout=5.0)
        check = asyncio.create_task(readiness.check())
        await asyncio.sleep(0.03)
        assert not check.done(), "refused attempts keep the poll going"
        sock.listen()
        assert await asyncio.wait_for(check, 5.0) is True
        await readiness.close()


async def test_http_probe_sends_kube_probe_agent_path_and_headers() -> None:
    app = ProbedApp()
    async with app.server() as server:
        spec = ProbeSpec(kind="http", path="/ready", headers=(("X-Check", "1"), ("user-agent", "custom")))
        readiness = fast(spec, port_of(server))
        assert await readiness.check() is True
        await readiness.close()
    assert app.calls[0]["path"] == "/ready"
    assert app.calls[0]["X-Check"] == "1"
    assert app.calls[0]["User-Agent"] == "custom"


async def test_http_probe_default_user_agent() -> None:
    app = ProbedApp(status=302)
    async with app.server() as server:
        readiness = fast(ProbeSpec(kind="http"), port_of(server))
        assert await readiness.check() is True, "3xx counts as ready"
        await readiness.close()
    assert app.calls[0]["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("kube-probe/")


async def test_http_probe_fails_on_server_error() -> None:
    app = ProbedApp(status=500)
    async with app.server() as server:
        readiness = fast(ProbeSpec(kind="http"), port_of(server))
        assert await readiness.check() is False
        await readiness.close()
    assert len(app.calls) >= 2, "aggressive mode retries until its poll timeout"


async def test_aggressive_mode_needs_success_threshold_in_a_row() -> None:
    app = ProbedApp()
    async with app.server() as server:
        readiness = fast(ProbeSpec(kind="http", success_threshold=3), port_of(server))
        assert await readiness.check() is True
        await readiness.close()
    assert len(app.calls) == 3


async def test_concurrent_checks_share_one_probe() -> None:
    app = ProbedApp(delay=0.02)
    async with app.server() as server:
        readiness = fast(ProbeSpec(kind="http"), port_of(server))
        results = await asyncio.gather(*(readiness.check() for _ in range(10)))
        await readiness.close()
    assert results == [True] * 10
    assert len(app.calls) == 1


async def test_a_caller_leaving_does_not_cancel_the_shared_check() -> None:
    app = ProbedApp(delay=0.03)
    async with app.server() as server:
        readiness = fast(ProbeSpec(kind="http"), port_of(server))
        leaving = asyncio.create_task(readiness.check())
        staying = asyncio.create_task(readiness.check())
        await asyncio.sleep(0.01)
        leaving.cancel()
        assert await staying is True
        await readiness.close()


async def test_periodic_mode_applies_kubelet_thresholds() -> None:
    clock = FakeClock()
    app = ProbedApp()
    async with app.server() as server:
        spec = ProbeSpec(kind="http", period=10.0, success_threshold=2, failure_threshold=2)
        readiness = fast(spec, port_of(server), now=clock.now)
        assert await readiness.check() is False, "one success of two"
        assert await readiness.check() is False, "within the period: no new attempt"
        assert len(app.calls) == 1
        clock.advance(10.0)
        assert await readiness.check() is True
        app.status = 503
        clock.advance(10.0)
        assert await readiness.check() is True, "one failure of two keeps it ready"
        clock.advance(10.0)
        assert await readiness.check() is False
        await readiness.close()
    assert len(app.calls) == 4


async def test_check_now_needs_a_fresh_attempt_in_periodic_mode_only() -> None:
    clock = FakeClock()
    app = ProbedApp()
    async with app.server() as server:
        periodic = fast(
            ProbeSpec(kind="http", period=10.0, failure_threshold=3), port_of(server), now=clock.now
        )
        assert await periodic.check_now() is True
        assert len(app.calls) == 2, "the kubelet-rule check, then one fresh attempt"
        app.status = 503
        clock.advance(1.0)
        assert await periodic.check() is True, "kubelet's rule: the last result stands for the period"
        assert await periodic.check_now() is False, "the app fails its probe now"
        await periodic.close()
        app.status = 200
        aggressive = fast(ProbeSpec(kind="http"), port_of(server))
        calls = len(app.calls)
        assert await aggressive.check_now() is True
        assert len(app.calls) == calls + 1, "an aggressive check is fresh: no second attempt"
        await aggressive.close()


# -- gRPC health probes, against a real grpcio server -------------------------------------------------------


@contextlib.asynccontextmanager
async def grpc_app(*, health: bool = True) -> AsyncIterator[tuple[int, Any]]:
    """A grpcio server on a free port, with gRPC's standard health service unless `health` is False; yields
    the port and the health servicer (None without one)."""
    server = grpc.aio.server()
    servicer = None
    if health:
        servicer = health_servicer.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        servicer.set("app.Svc", health_pb2.HealthCheckResponse.NOT_SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port, servicer
    finally:
        await server.stop(0)


async def test_grpc_probe_passes_when_the_app_reports_serving() -> None:
    async with grpc_app() as (port, servicer):
        readiness = fast(ProbeSpec(kind="grpc"), port)
        assert await readiness.attempt(2.0)
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert not await readiness.attempt(2.0)
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert await readiness.attempt(2.0)


@pytest.mark.parametrize(
    ("service", "health"),
    [
        pytest.param("app.Svc", True, id="service-not-serving"),
        pytest.param("unknown.Svc", True, id="service-unknown"),
        pytest.param("", False, id="no-health-service"),
    ],
)
async def test_grpc_probe_fails_unless_the_service_is_serving(service: str, health: bool) -> None:
    async with grpc_app(health=health) as (port, _):
        assert not await fast(ProbeSpec(kind="grpc", service=service), port).attempt(2.0)


async def test_grpc_probe_fails_against_an_http11_app_or_nothing() -> None:
    app = ProbedApp()
    async with app.server() as server:
        assert not await fast(ProbeSpec(kind="grpc"), port_of(server)).attempt(2.0)
    assert not await fast(ProbeSpec(kind="grpc"), closed_port()).attempt(2.0)


@pytest.mark.parametrize(
    ("service", "payload"),
    [("", b"\x00\x00\x00\x00\x00"), ("a.B", b"\x00\x00\x00\x00\x05\x0a\x03a.B")],
)
def test_health_request_encoding_matches_protobuf(service: str, payload: bytes) -> None:
    body = health_pb2.HealthCheckRequest(service=service).SerializeToString()
    assert payload == b"\x00" + len(body).to_bytes(4, "big") + body
    assert h2probe.request_message(service) == payload


@pytest.mark.parametrize("status", [0, 1, 2, 3])
def test_health_reply_decoding_matches_protobuf(status: int) -> None:
    body = health_pb2.HealthCheckResponse(status=status).SerializeToString()
    assert h2probe.serving_status(b"\x00" + len(body).to_bytes(4, "big") + body) == status


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"", "not an uncompressed gRPC message"),
        (b"\x01\x00\x00\x00\x00", "not an uncompressed gRPC message"),
        (b"\x00\x00\x00\x00\x05\x08", "truncated gRPC message"),
        (b"\x00\x00\x00\x00\x02\x08\xff", "truncated varint"),
    ],
)
def test_malformed_health_replies_are_refused(payload: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        h2probe.serving_status(payload)


# -- httpGet probes of an app that speaks only HTTP/2 (a port named h2c) ------------------------------------


@pytest.mark.parametrize(("status", "ready"), [(200, True), (302, True), (503, False)])
async def test_http_probe_of_an_h2c_app_goes_over_http2(status: int, ready: bool) -> None:
    seen: list[Stream] = []

    async def app(peer: H2Peer, stream: Stream) -> None:
        seen.append(stream)
        await peer.respond(stream.id, status)

    async with h2_upstream(app) as upstream:
        spec = ProbeSpec(kind="http", path="/ready", headers=(("X-Probe", "yes"),))
        assert await fast(spec, upstream.port, http2=True).attempt(2.0) is ready
        # The same probe over HTTP/1.1 gets nowhere with such an app.
        http1 = fast(spec, upstream.port)
        try:
            assert not await http1.attempt(2.0)
        finally:
            await http1.close()
    probe = seen[0]
    assert (probe.header(":method"), probe.header(":path")) == ("GET", "/ready")
    assert probe.header("user-agent") == USER_AGENT
    assert probe.header("x-probe") == "yes"
