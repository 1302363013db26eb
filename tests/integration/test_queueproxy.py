"""`serving queue-proxy` as a real process in front of a real app: proxying, probes, statuses, timeouts."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.stat import PROTOBUF_CONTENT_TYPE, Stat, decode_stat
from tests.fakes.app import FakeApp, pattern
from tests.fakes.process import free_port
from tests.fakes.queueproxy import QueueProxyProcess, base_env, command, process_env

LONG = aiohttp.ClientTimeout(total=60)


@pytest.fixture
async def app() -> AsyncIterator[FakeApp]:
    async with FakeApp() as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=LONG) as client:
        yield client


@pytest.fixture
async def qp(app: FakeApp) -> AsyncIterator[QueueProxyProcess]:
    async with QueueProxyProcess.start(user_port=app.port) as process:
        yield process


async def test_proxies_bodies_and_methods(qp: QueueProxyProcess, session: aiohttp.ClientSession) -> None:
    body = pattern(300_000)
    async with session.post(qp.url + "/echo?x=1", data=body) as response:
        assert response.status == 200
        assert response.headers["x-echo-method"] == "POST"
        assert response.headers["x-echo-target"] == "/echo?x=1"
        assert await response.read() == body
    async with session.get(qp.url + "/big?bytes=2000000") as response:
        assert await response.read() == pattern(2_000_000)
    async with session.get(qp.url + "/status/418") as response:
        assert response.status == 418
        assert await response.text() == "status 418"


async def test_chunked_upload_and_head(qp: QueueProxyProcess, session: aiohttp.ClientSession) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(20):
            yield pattern(10_000 + index)

    async with session.post(qp.url + "/echo", data=chunks()) as response:
        assert response.status == 200
        assert await response.read() == b"".join(pattern(10_000 + index) for index in range(20))
    async with session.head(qp.url + "/big?bytes=5000") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "5000"
        assert await response.read() == b""
    async with session.get(qp.url + "/echo") as response:
        assert response.status == 200, "the connection is still usable after HEAD"


async def test_header_rules_reach_the_app(
    qp: QueueProxyProcess, app: FakeApp, session: aiohttp.ClientSession
) -> None:
    headers = {
        "Knative-Serving-Revision": "hello-00001",
        "Knative-Serving-Namespace": "default",
        "K-Original-Host": "hello.example.com",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Proto": "https",
    }
    async with session.get(qp.url + "/headers", headers=headers) as response:
        seen = await response.json()
    assert "knative-serving-revision" not in seen
    assert "knative-serving-namespace" not in seen
    assert "k-original-host" not in seen
    assert seen["host"] == ["hello.example.com"]
    assert seen["forwarded"] == ["for=203.0.113.7;proto=https"]


@pytest.mark.parametrize(
    ("headers", "status", "body"),
    [
        pytest.param(
            {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"}, 200, "queue", id="queue-probe"
        ),
        pytest.param({"User-Agent": "kube-probe/1.30"}, 200, "queue", id="kubelet-probe-runs-readiness"),
        pytest.param({"K-Kubelet-Probe": "1"}, 200, "queue", id="k-kubelet-probe-header"),
        pytest.param(
            {"User-Agent": "Knative-Activator-Probe", "K-Network-Probe": "queue"},
            200,
            "queue",
            id="activator",
        ),
        pytest.param(
            {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "activator"},
            400,
            "unexpected probe header value: activator\n",
            id="bad-probe-value",
        ),
        pytest.param(
            {"K-Network-Probe": "probe", "K-Network-Hash": "abc123"}, 200, "abc123", id="network-hash"
        ),
        pytest.param(
            {"K-Network-Probe": "probe"},
            400,
            "a network probe needs a K-Network-Hash header\n",
            id="hash-missing",
        ),
        pytest.param({"K-Network-Probe": "queue"}, 201, "status 201", id="not-a-health-check-is-proxied"),
    ],
)
async def test_probes(
    qp: QueueProxyProcess,
    app: FakeApp,
    session: aiohttp.ClientSession,
    headers: dict[str, str],
    status: int,
    body: str,
) -> None:
    app.reset_counts()
    async with session.get(qp.url + "/status/201", headers=headers) as response:
        assert response.status == status
        assert await response.text() == body
        if "K-Network-Hash" in headers and status == 200:
            assert response.headers["K-Network-Hash"] == headers["K-Network-Hash"]
    assert app.requests == (1 if status == 201 else 0), "health checks never reach the app"


async def test_without_an_app_probes_fail_and_requests_get_502(session: aiohttp.ClientSession) -> None:
    env = {"SERVING_READINESS_PROBE": '{"tcpSocket": {}, "periodSeconds": 1}'}
    async with QueueProxyProcess.start(user_port=free_port(), env=env, wait_ready=False) as qp:
        probe = {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"}
        async with session.get(qp.url, headers=probe) as response:
            assert response.status == 503
        async with session.get(qp.url + "/anything") as response:
            assert response.status == 502
            assert "refused" in await response.text()


async def test_refused_502_is_marked_so_the_proxy_in_front_may_retry(session: aiohttp.ClientSession) -> None:
    """`k-app-refused: 1` on the 502 when the app refused the connection: nothing reached it, so the activator
    or router in front may send the request to another pod (its engine consumes the mark)."""
    async with QueueProxyProcess.start(user_port=free_port(), wait_ready=False) as qp:
        async with session.get(qp.url + "/anything") as response:
            assert response.status == 502
            assert response.headers["k-app-refused"] == "1"
        async with session.post(qp.url + "/echo", data=b"payload") as response:
            assert response.status == 502
            assert response.headers["k-app-refused"] == "1"


async def test_activator_probe_sees_the_app_down_at_once_with_a_periodic_readiness_probe(
    session: aiohttp.ClientSession,
) -> None:
    """Kubelet's rule keeps a dead app ready for period x failureThreshold; the activator's probe decides
    where requests go next, so the queue-proxy answers it from a fresh probe of the app."""
    app = await FakeApp().start()
    user_port = app.port
    env = {"SERVING_READINESS_PROBE": '{"tcpSocket": {}, "periodSeconds": 10, "failureThreshold": 3}'}
    activator_probe = {"User-Agent": "Knative-Activator-Probe", "K-Network-Probe": "queue"}
    kubelet_probe = {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"}
    try:
        async with QueueProxyProcess.start(user_port=user_port, env=env) as qp:
            async with session.get(qp.url + "/healthz", headers=activator_probe) as response:
                assert (response.status, await response.text()) == (200, "queue")
            await app.close()
            async with session.get(qp.url, headers=kubelet_probe) as response:
                assert response.status == 200, "within the period kubelet's answer stands"
            async with session.get(qp.url + "/healthz", headers=activator_probe) as response:
                assert response.status == 503
    finally:
        await app.close()


async def test_queue_full_gets_503_with_retry_after(app: FakeApp, session: aiohttp.ClientSession) -> None:
    async with QueueProxyProcess.start(user_port=app.port, env={"CONTAINER_CONCURRENCY": "1"}) as qp:
        # 1 in flight + 10 waiting (10 x containerConcurrency) fill the breaker.
        held = [asyncio.create_task(session.get(qp.url + "/sleep?ms=400")) for _ in range(11)]
        await wait_for_metric(session, qp, "queue_depth", 10.0)
        async with session.get(qp.url + "/echo") as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            assert await response.text() == "pending request queue full\n"
        responses = await asyncio.gather(*held)
        assert [r.status for r in responses] == [200] * 11
        for r in responses:
            r.release()
    assert app.max_active == 1


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_breaker_bounds_app_concurrency(
    app: FakeApp, session: aiohttp.ClientSession, concurrency: int
) -> None:
    async with QueueProxyProcess.start(
        user_port=app.port, env={"CONTAINER_CONCURRENCY": str(concurrency)}
    ) as qp:
        app.reset_counts()
        admitted = 11 * concurrency  # CC in flight + 10 x CC waiting

        async def one() -> int:
            async with session.get(qp.url + "/sleep?ms=30") as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one() for _ in range(admitted)))
        assert statuses == [200] * admitted, "nobody is refused while the queue has room"
        assert app.max_active == concurrency
        overload = await asyncio.gather(*(one() for _ in range(admitted + 15)))
        assert set(overload) <= {200, 503}
        assert overload.count(200) >= admitted
        assert app.max_active == concurrency


async def test_total_timeout_includes_queue_wait(app: FakeApp, session: aiohttp.ClientSession) -> None:
    env = {"CONTAINER_CONCURRENCY": "1", "REVISION_TIMEOUT_SECONDS": "2"}
    async with QueueProxyProcess.start(user_port=app.port, env=env) as qp:
        started = time.monotonic()
        async with session.get(qp.url + "/sleep?ms=5000") as response:
            assert response.status == 504
            assert await response.text() == "request timeout\n"
        assert time.monotonic() - started < 4
        # The blocker holds the only slot for 1.8 s; the second request then needs 1 s of app time, which
        # fits in 2 s alone but not after its wait in the queue.
        blocker = asyncio.create_task(session.get(qp.url + "/sleep?ms=1800"))
        await wait_for_metric(session, qp, "queue_in_flight_requests", 1.0)
        async with session.get(qp.url + "/sleep?ms=1000") as response:
            assert response.status == 504, "queue wait counts against the request timeout"
        blocked = await blocker
        assert blocked.status == 200
        blocked.release()


async def test_response_start_timeout(app: FakeApp, session: aiohttp.ClientSession) -> None:
    env = {"REVISION_RESPONSE_START_TIMEOUT_SECONDS": "0.5"}
    async with QueueProxyProcess.start(user_port=app.port, env=env) as qp:
        async with session.get(qp.url + "/sleep?ms=2000") as response:
            assert response.status == 504
            assert "start its response" in await response.text()
        async with session.get(qp.url + "/stall?ms=1000") as response:
            assert response.status == 200, "a started response is not bound by the response-start timeout"
            assert await response.read() == b"started\nfinished\n"


async def test_idle_timeout(app: FakeApp, session: aiohttp.ClientSession) -> None:
    env = {"REVISION_IDLE_TIMEOUT_SECONDS": "0.5"}
    async with QueueProxyProcess.start(user_port=app.port, env=env) as qp:
        async with session.get(qp.url + "/sleep?ms=2000") as response:
            assert response.status == 504
        async with session.get(qp.url + "/stall?ms=2000") as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        async with session.get(qp.url + "/stream?chunks=4&interval_ms=200") as response:
            assert len(await response.read()) == 64, "a steady stream is never idle"


async def test_streaming_arrives_incrementally(qp: QueueProxyProcess, session: aiohttp.ClientSession) -> None:
    arrivals: list[float] = []
    received = b""
    async with session.get(qp.url + "/stream?chunks=4&size=100&interval_ms=250") as response:
        async for chunk in response.content.iter_any():
            arrivals.append(time.monotonic())
            received += chunk
    assert received == b"a" * 100 + b"b" * 100 + b"c" * 100 + b"d" * 100
    assert arrivals[-1] - arrivals[0] >= 0.6, "chunks were relayed as they came, not buffered"


async def test_server_sent_events_arrive_as_sent(
    qp: QueueProxyProcess, session: aiohttp.ClientSession
) -> None:
    events: list[tuple[float, bytes]] = []
    async with session.get(qp.url + "/sse?events=3&interval_ms=300") as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        async for line in response.content:
            if line.startswith(b"data:"):
                events.append((time.monotonic(), line.strip()))
    assert [data for _, data in events] == [b"data: 0", b"data: 1", b"data: 2"]
    assert events[-1][0] - events[0][0] >= 0.45


async def test_websocket_echo_and_close_code(qp: QueueProxyProcess, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(qp.url + "/ws?close_code=4001") as ws:
        await ws.send_str("hello")
        assert (await ws.receive_str(timeout=10)) == "hello"
        await ws.send_bytes(b"\x00\x01")
        assert (await ws.receive_bytes(timeout=10)) == b"\x00\x01"
        await ws.send_str("close")
        message = await ws.receive(timeout=10)
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4001 or message.data == 4001


async def test_client_disconnect_frees_the_slot(app: FakeApp, session: aiohttp.ClientSession) -> None:
    async with QueueProxyProcess.start(user_port=app.port, env={"CONTAINER_CONCURRENCY": "1"}) as qp:
        short = aiohttp.ClientTimeout(total=0.5)
        # In flight, then gone: the slot must be free long before the app's 20 s would end.
        with pytest.raises(TimeoutError):
            await session.get(qp.url + "/sleep?ms=20000", timeout=short)
        # A queued waiter that leaves frees its queue place too.
        blocker = asyncio.create_task(session.get(qp.url + "/sleep?ms=1500"))
        await wait_for_metric(session, qp, "queue_in_flight_requests", 1.0)
        with pytest.raises(TimeoutError):
            await session.get(qp.url + "/sleep?ms=10", timeout=short)
        await wait_for_metric(session, qp, "queue_depth", 0.0)
        started = time.monotonic()
        (await blocker).release()
        async with session.get(qp.url + "/sleep?ms=10") as response:
            assert response.status == 200
        assert time.monotonic() - started < 5


async def test_autoscaler_stats_after_load(app: FakeApp, session: aiohttp.ClientSession) -> None:
    windows: dict[int, Stat] = {}

    async def scrape(qp: QueueProxyProcess) -> None:
        """Every window, as the autoscaler would see it (each scrape returns the last closed window)."""
        while True:
            async with session.get(qp.stats_url) as response:
                assert response.headers["Content-Type"] == PROTOBUF_CONTENT_TYPE
                stat = decode_stat(await response.read())
            windows[stat.timestamp] = stat
            await asyncio.sleep(0.2)

    async with QueueProxyProcess.start(user_port=app.port) as qp:
        scraper = asyncio.create_task(scrape(qp))
        slow = [asyncio.create_task(session.get(qp.url + "/sleep?ms=2500")) for _ in range(4)]
        for index in range(10):
            headers = {"K-Proxy-Request": "activator"} if index % 2 else {}
            async with session.get(qp.url + "/echo", headers=headers) as response:
                assert response.status == 200
        for response in await asyncio.gather(*slow):
            response.release()
        await asyncio.sleep(1.5)  # the window holding the last request closes
        scraper.cancel()
    stats = list(windows.values())
    assert sum(s.request_count for s in stats) == 14
    assert sum(s.proxied_request_count for s in stats) == 5
    assert max(s.average_concurrent_requests for s in stats) >= 3.5, "4 requests spanned a whole window"
    assert max(s.average_concurrent_requests for s in stats) <= 4.5
    assert {s.pod_name for s in stats} == {qp.env["SERVING_POD"]}
    assert all(s.process_uptime > 0 for s in stats if s.request_count)
    assert all(abs(s.timestamp / 1e9 - time.time()) < 60 for s in stats)


async def test_prometheus_metrics(qp: QueueProxyProcess, session: aiohttp.ClientSession) -> None:
    for path in ("/echo", "/echo", "/status/404"):
        async with session.get(qp.url + path) as response:
            await response.read()
    async with session.get(qp.metrics_url) as response:
        assert response.status == 200
        text = await response.text()
    samples = {
        (sample.name, sample.labels.get("response_code", "")): sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    ok = samples["queue_requests_total", "200"]
    assert ok.value == 2.0
    assert ok.labels["response_code_class"] == "2xx"
    assert ok.labels["revision_name"] == qp.env["SERVING_REVISION"]
    assert samples["queue_requests_total", "404"].value == 1.0
    assert samples["queue_request_duration_seconds_count", ""].value == 3.0
    assert samples["queue_depth", ""].value == 0.0
    assert samples["queue_in_flight_requests", ""].value == 0.0


async def test_request_log_and_json_logs(app: FakeApp, session: aiohttp.ClientSession) -> None:
    env = {"REQUEST_LOG": "true", "LOG_FORMAT": "json"}
    async with QueueProxyProcess.start(user_port=app.port, env=env) as qp:
        async with session.get(qp.url + "/status/202?q=1") as response:
            assert response.status == 202
        deadline = time.monotonic() + 10
        while '"target":"/status/202?q=1"' not in qp.logs() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        lines = qp.logs().splitlines()
    entry = json.loads(next(line for line in lines if '"target":"/status/202?q=1"' in line))
    assert (entry["status"], entry["method"], entry["revision"]) == (202, "GET", "hello-00001")
    started = json.loads(next(line for line in lines if "queue-proxy for" in line))
    assert started["level"] == "info"


def test_invalid_environment_exits_1_listing_every_problem() -> None:
    env = base_env(8080)
    env.update(
        {
            "CONTAINER_CONCURRENCY": "many",
            "REVISION_TIMEOUT_SECONDS": "-3",
            "QUEUE_STATS_PORT": "0",
            "SERVING_READINESS_PROBE": '{"exec": {"command": ["true"]}}',
        }
    )
    del env["SERVING_POD"]
    result = subprocess.run(
        command(), env=process_env(env), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    for name in (
        "CONTAINER_CONCURRENCY",
        "REVISION_TIMEOUT_SECONDS",
        "QUEUE_STATS_PORT",
        "SERVING_READINESS_PROBE",
        "SERVING_POD",
    ):
        assert name in result.stderr, name


def test_a_busy_port_exits_1_with_a_reason() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = base_env(free_port())
        env["QUEUE_STATS_PORT"] = str(busy.getsockname()[1])
        result = subprocess.run(
            command(), env=process_env(env), capture_output=True, text=True, timeout=60, check=False
        )
    assert result.returncode == 1
    assert "stats server cannot listen" in result.stderr


async def wait_for_metric(
    session: aiohttp.ClientSession, qp: QueueProxyProcess, name: str, value: float, timeout: float = 20.0
) -> None:
    """Poll the Prometheus endpoint until the gauge `name` reads `value`."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        async with session.get(qp.metrics_url) as response:
            text = await response.text()
        for line in text.splitlines():
            if line.startswith(name + "{"):
                last = line
                if float(line.rsplit(" ", 1)[1]) == value:
                    return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name} never reached {value}; last: {last}")


async def test_a_client_that_never_reads_its_response_holds_the_slot_only_until_the_timeout(
    app: FakeApp, session: aiohttp.ClientSession
) -> None:
    """A client asks for 64 MiB and never reads a byte: the response fills the socket buffers and the app's
    write blocks, but the revision's timeout still ends the request, and the one slot serves the next."""
    env = {"CONTAINER_CONCURRENCY": "1", "REVISION_TIMEOUT_SECONDS": "2"}
    async with QueueProxyProcess.start(user_port=app.port, env=env) as qp:
        reader, writer = await asyncio.open_connection("127.0.0.1", qp.port)
        writer.write(f"GET /big?bytes={64 * 1024 * 1024} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        await wait_for_metric(session, qp, "queue_in_flight_requests", 1.0)
        started = time.monotonic()
        async with session.get(qp.url + "/echo") as response:
            assert response.status == 200, "the slot came back to serve the next request"
        waited = time.monotonic() - started
        assert 1.0 < waited < 4.0, f"the slot was held {waited:.1f}s, not until the 2 s timeout"
        # The reader's response was cut (it was not whole when the timeout came): the connection closes.
        received = 0
        async with asyncio.timeout(30):
            while chunk := await reader.read(1 << 20):
                received += len(chunk)
        assert received < 64 * 1024 * 1024
        writer.close()
