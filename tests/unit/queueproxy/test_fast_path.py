"""The queue-proxy's fast path: plain requests forwarded from the engine's read callback, with no handler
task, end exactly as those the handler task forwards (statuses, stats, breaker, deadlines, a client leaving, a
stale pooled connection). A real engine server in front of a scripted raw-socket app on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry

from queueproxy.drain import Drainer
from queueproxy.handler import CLIENT_GONE, QueueHandler
from queueproxy.inflight import InFlight
from queueproxy.metrics import RequestMetrics
from queueproxy.probe import ProbeSpec
from queueproxy.readiness import Readiness
from queueproxy.requestlog import RequestLog
from serving.breaker import Breaker
from serving.clock import FakeClock
from serving.concurrency import RequestStats
from serving.http import Exchange, ForwardTimeouts, Server, UpstreamPool, serve
from tests.unit.queueproxy.test_handler import IDENTITY, requests_counted
from tests.unit.serving.http.rawhttp import WAIT, Closed, RawClient, raw_server


@dataclass
class App:
    """An app on a raw socket that does what each request's path says.

    `/ok` answers 200 with the request body echoed, `/slow` the same a tenth of a second later. `/hang` never
    answers (until the proxy closes the connection: `given_up` counts those). `/garbage` answers bytes that
    are no HTTP response; `/partial` sends a head for 10 bytes, 3 of them, and closes. With `drop_reused` set,
    the next request that arrives on a connection that served one before is read and dropped by closing the
    connection (a pooled connection the app had given up on), once per count."""

    port: int = 0
    drop_reused: int = 0
    connections: int = 0
    requests: list[tuple[str, bytes]] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)
    given_up: int = 0
    hanging: list[asyncio.StreamWriter] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            if served and self.drop_reused:
                self.drop_reused -= 1
                writer.close()
                return
            served += 1
            self.requests.append((path, body))
            self.heads.append(head)
            if path == "/hang":
                self.hanging.append(writer)
                await reader.read()  # until the proxy gives up on it
                self.given_up += 1
                return
            if path == "/slow":
                await asyncio.sleep(0.1)
            if path == "/garbage":
                writer.write(b"this is not HTTP\r\n\r\n")
            elif path == "/partial":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
                await writer.drain()
                writer.close()
                return
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body) + 2, b"ok" + body)
                )
            await writer.drain()


class Rig:
    """A queue-proxy handler on a real engine server (fast path on) in front of `App`; a fake clock for the
    request deadline, which the test sweeps itself."""

    def __init__(
        self,
        app_port: int,
        *,
        concurrency: int = 0,
        timeouts: ForwardTimeouts | None = None,
        request_log: RequestLog | None = None,
    ) -> None:
        self.clock = FakeClock(100.0)
        self.stats = RequestStats(self.clock.now())
        self.breaker = Breaker(capacity=concurrency, queue_depth=10 * concurrency) if concurrency else None
        self.registry = CollectorRegistry()
        self.in_flight = InFlight(now=self.clock.now)
        self.pool = UpstreamPool("127.0.0.1", app_port)
        self.handler = QueueHandler(
            pool=self.pool,
            breaker=self.breaker,
            stats=self.stats,
            metrics=RequestMetrics(self.registry, IDENTITY, queue_depth=lambda: 0, in_flight=lambda: 0),
            drainer=Drainer(30.0, now=self.clock.now),
            in_flight=self.in_flight,
            readiness=Readiness(ProbeSpec(), 1, aggressive_poll_timeout=0.0),
            timeout=300.0,
            timeouts=timeouts or ForwardTimeouts(),
            request_log=request_log,
            now=self.clock.now,
        )
        self.in_task = 0  # requests the handler ran in the connection's task
        self.server: Server | None = None

    async def _slow(self, exchange: Exchange) -> None:
        self.in_task += 1
        await self.handler(exchange)

    async def start(self) -> int:
        self.server = await serve(self._slow, "127.0.0.1", 0, fast=self.handler.fast)
        return self.server.port

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def count(self, status: int) -> float:
        return requests_counted(self.registry, status)

    def assert_idle(self) -> None:
        """Nothing of any request is left: slots, concurrency, deadlines."""
        assert len(self.in_flight) == 0
        assert self.stats.concurrency == 0
        if self.breaker is not None:
            assert (self.breaker.in_flight, self.breaker.waiting) == (0, 0)


@pytest.fixture
async def app() -> AsyncIterator[App]:
    scripted = App()
    async with raw_server(scripted.serve) as port:
        scripted.port = port
        yield scripted


@contextlib.asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[RawClient]:
    port = await rig.start()
    client = await RawClient.connect(port)
    try:
        yield client
    finally:
        await client.close()
        assert rig.server is not None
        await rig.server.drain(1.0)
        await rig.pool.close()


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: app\r\n\r\n".encode()


async def until(condition: Callable[[], object], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while not condition():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"waited {WAIT}s for {what}") from None


async def hang_on_the_fast_path(rig: Rig, client: RawClient, app: App) -> None:
    """A request the app never answers, sent when the pool has an idle connection: the fast path takes it."""
    await client.request(get("/ok"))
    await client.send(get("/hang"))
    await until(lambda: app.hanging, "the app holds the request")
    assert rig.in_task == 1  # only the first request, which found no idle connection


async def test_plain_requests_are_forwarded_without_the_task_and_probes_with_it(app: App) -> None:
    rig = Rig(app.port, concurrency=2)
    async with running(rig) as client:
        first = await client.request(get("/ok"))
        assert (first.status, first.body, rig.in_task) == (200, b"ok", 1)  # no idle connection yet: the task
        for _ in range(3):
            response = await client.request(get("/ok"))
            assert (response.status, response.body) == (200, b"ok")
        posted = await client.request(b"POST /ok HTTP/1.1\r\nhost: app\r\ncontent-length: 5\r\n\r\nhello")
        assert (posted.status, posted.body) == (200, b"okhello")
        probe = await client.request(
            b"GET / HTTP/1.1\r\nhost: app\r\nk-network-probe: probe\r\nk-network-hash: h1\r\n\r\n"
        )
        assert (probe.status, probe.body) == (200, b"h1")
        # The probe is answered by the task; everything else after the first request went the fast path.
        assert rig.in_task == 2
        assert app.connections == 1
        assert rig.count(200) == 5.0
        rig.assert_idle()


async def test_header_rules_apply_on_the_fast_path(app: App) -> None:
    rig = Rig(app.port)
    async with running(rig) as client:
        await client.request(get("/ok"))
        response = await client.request(
            b"GET /ok HTTP/1.1\r\nhost: app\r\nk-original-host: example.com\r\nx-forwarded-for: 10.0.0.1\r\n"
            b"k-proxy-request: activator\r\n\r\n"
        )
        assert response.status == 200
        assert rig.in_task == 1
        rig.assert_idle()
    head = app.heads[-1].decode("latin-1").lower()
    assert "host: example.com\r\n" in head
    assert "forwarded: for=10.0.0.1\r\n" in head
    assert "k-original-host" not in head
    assert "k-proxy-request" not in head
    assert rig.stats.report(rig.clock.now()).proxied_request_count == 1.0  # the activator's request


async def test_pipelined_requests_on_both_paths_are_answered_in_order(app: App) -> None:
    rig = Rig(app.port)
    async with running(rig) as client:
        await client.request(get("/ok"))
        await client.send(
            get("/ok?1")
            + b"GET / HTTP/1.1\r\nhost: app\r\nk-network-probe: probe\r\nk-network-hash: h2\r\n\r\n"
            + b"POST /ok?3 HTTP/1.1\r\nhost: app\r\ncontent-length: 3\r\n\r\nxyz"
            + get("/ok?4")
        )
        bodies = [(await client.read_response()).body for _ in range(4)]
        assert bodies == [b"ok", b"h2", b"okxyz", b"ok"]
        assert [path for path, _ in app.requests] == ["/ok", "/ok?1", "/ok?3", "/ok?4"]
        rig.assert_idle()


async def test_the_deadline_on_the_fast_path_answers_504_and_frees_the_slot(app: App) -> None:
    rig = Rig(app.port, concurrency=1)
    async with running(rig) as client:
        await hang_on_the_fast_path(rig, client, app)
        rig.clock.advance(299.9)
        assert rig.in_flight.expire() == 0
        rig.clock.advance(0.2)
        assert rig.in_flight.expire() == 1
        response = await client.read_response()
        assert (response.status, response.body) == (504, b"request timeout\n")
        rig.assert_idle()
        assert rig.count(504) == 1.0
        # The connection stays usable; the hung upstream connection was closed, not pooled.
        again = await client.request(get("/ok"))
        assert again.status == 200
        assert app.connections == 2


async def test_a_client_leaving_on_the_fast_path_is_recorded_and_frees_the_slot(app: App) -> None:
    rig = Rig(app.port, concurrency=1)
    async with running(rig) as client:
        await hang_on_the_fast_path(rig, client, app)
        client.writer.transport.abort()
        await until(lambda: rig.count(CLIENT_GONE) == 1.0, "the request recorded as the client's leaving")
        rig.assert_idle()
        await until(lambda: app.given_up == 1, "the upstream connection closed")


@pytest.mark.parametrize("idle", [1, 2], ids=["reconnect", "another-idle-connection"])
async def test_a_stale_pooled_connection_is_retried_once(app: App, idle: int) -> None:
    rig = Rig(app.port)
    async with running(rig) as client:
        # `idle` connections in the pool: as many slow requests at once, each on a connection of its own.
        others = [await RawClient.connect(rig.port) for _ in range(idle - 1)]
        warm = [c.request(get("/slow")) for c in [client, *others]]
        for response in await asyncio.gather(*warm):
            assert response.status == 200
        assert rig.pool.idle_count == idle
        app.drop_reused = 1
        response = await client.request(get("/ok?after"))
        assert (response.status, response.body) == (200, b"ok")
        assert app.requests[-1][0] == "/ok?after"
        assert rig.count(200) == idle + 1.0
        rig.assert_idle()
        for other in others:
            await other.close()


async def test_two_stale_connections_in_a_row_are_a_502(app: App) -> None:
    rig = Rig(app.port)
    async with running(rig) as client:
        await client.request(get("/ok"))
        second = await RawClient.connect(rig.port)
        await asyncio.gather(client.request(get("/slow")), second.request(get("/slow")))
        assert rig.pool.idle_count == 2
        app.drop_reused = 2  # both: the retry takes the other idle connection, which the app drops too
        response = await client.request(get("/ok?after"))
        assert response.status == 502
        assert rig.count(502) == 1.0
        rig.assert_idle()
        await second.close()


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        pytest.param("/garbage", 502, b"error reading the app's response\n", id="not-http"),
        pytest.param(
            "/hang", 504, b"timed out waiting for the app to start its response\n", id="response-start"
        ),
    ],
)
async def test_app_failures_on_the_fast_path_get_the_task_paths_answers(
    app: App, path: str, status: int, body: bytes
) -> None:
    rig = Rig(app.port, timeouts=ForwardTimeouts(response_start=0.2))
    async with running(rig) as client:
        await client.request(get("/ok"))
        response = await client.request(get(path))
        assert (response.status, response.body) == (status, body)
        assert rig.in_task == 1
        assert rig.count(status) == 1.0
        rig.assert_idle()
        assert (await client.request(get("/ok"))).status == 200


async def test_an_app_closing_mid_body_resets_the_client(app: App) -> None:
    rig = Rig(app.port)
    async with running(rig) as client:
        await client.request(get("/ok"))
        with pytest.raises(Closed):
            await client.request(get("/partial"))
        await until(lambda: rig.count(502) == 1.0, "the failure recorded")
        rig.assert_idle()


async def test_a_fast_path_that_raises_answers_500_and_the_server_goes_on() -> None:
    def broken(exchange: Exchange) -> bool:
        raise RuntimeError("bug")

    async def handler(exchange: Exchange) -> None:
        await exchange.respond(200, (), b"task")

    server = await serve(handler, "127.0.0.1", 0, fast=broken)
    try:
        client = await RawClient.connect(server.port)
        response = await client.request(get("/"))
        assert response.status == 500
        with pytest.raises(Closed):
            await client.read_response()
        await client.close()
        # A request whose body is still on its way is never offered to the fast path: the task answers it.
        other = await RawClient.connect(server.port)
        answer = await other.request(b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n")
        assert (answer.status, answer.body) == (200, b"task")
        await other.close()
    finally:
        await server.drain(1.0)


class BrokenStream(io.StringIO):
    """A log stream whose reader went away."""

    def write(self, text: str) -> int:
        raise BrokenPipeError("the log's reader is gone")


async def test_a_failure_recording_a_request_neither_stalls_the_connection_nor_stops_the_sweeper(
    app: App,
) -> None:
    """The fast path's end runs in the engine's callbacks and in the deadline sweeper: a failing access log
    is logged there, and the client still gets its answers and the connection its next request."""
    rig = Rig(app.port, concurrency=1, request_log=RequestLog("rev", "pod", BrokenStream()))
    async with running(rig) as client:
        await hang_on_the_fast_path(rig, client, app)  # its first request's log line failed in the task
        rig.clock.advance(300.0)
        assert rig.in_flight.expire() == 1
        assert (await client.read_response()).status == 504
        for _ in range(2):
            response = await client.request(get("/ok"))
            assert (response.status, response.body) == (200, b"ok")
        rig.assert_idle()
        assert rig.in_task == 2  # the hung connection was closed: one new one, awaited in the task


async def test_a_malformed_body_after_a_request_of_the_task_is_a_400_and_nothing_breaks(app: App) -> None:
    """The connection's task waits for the next request when its head and a malformed body arrive in one
    read: the 400 is answered and the connection's end raises nothing in the event loop."""
    loop = asyncio.get_running_loop()
    failures: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: failures.append(context))
    try:
        rig = Rig(app.port)
        async with running(rig) as client:
            probe = await client.request(
                b"GET / HTTP/1.1\r\nhost: app\r\nk-network-probe: probe\r\nk-network-hash: h\r\n\r\n"
            )
            assert (probe.status, rig.in_task) == (200, 1)
            response = await client.request(
                b"POST /ok HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"
            )
            assert response.status == 400
            client.writer.transport.abort()
            await asyncio.sleep(0.1)  # the server side's connection_lost
        assert failures == []
    finally:
        loop.set_exception_handler(None)
