"""The activator's request path in one process: real engine, real sockets, fake pods (aiohttp servers)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from activator.handler import ActivatorHandler
from activator.metrics import ActivatorMetrics
from activator.probe import HttpProbe
from activator.registry import Registry
from activator.reporter import StatReporter
from serving.clock import MonotonicClock
from serving.http import Server, serve
from serving.platform import Pod, Revision, RevisionKey, Snapshot
from serving.stat import RevisionStat, decode_wire
from tests.fakes.app import FakeApp
from tests.fakes.pod import FakePod
from tests.fakes.process import free_port
from tests.fakes.queueproxy import QueueProxyProcess

KEY = RevisionKey("default", "hello-00001")
HOST = "hello-00001.default.svc.cluster.local"


def revision(*pods: Pod, cc: int = 0, timeout: float = 30.0) -> Revision:
    return Revision(
        key=KEY,
        service="hello",
        configuration="hello",
        container_concurrency=cc,
        timeout_seconds=timeout,
        pods=pods,
    )


class Rig:
    """An activator request path on a free port, fed snapshots directly."""

    def __init__(self, session: aiohttp.ClientSession, queue_depth: int) -> None:
        self.session = session
        self.prometheus = CollectorRegistry()
        self.pokes: list[list[RevisionStat]] = []
        self.reporter = StatReporter(
            pod_name="test", clock=MonotonicClock(), send=lambda data: self.pokes.append(decode_wire(data))
        )
        self.registry = Registry(
            probe=HttpProbe(session).for_revision,
            metrics=ActivatorMetrics(self.prometheus, lambda: self.registry.occupancy()),
            queue_depth=queue_depth,
            # Seeded: with containerConcurrency 0 ties between two idle pods are broken at random, and a test
            # that needs both pods tried must not depend on luck (this seed picks each within two requests).
            rng=random.Random(1),
        )
        self.server: Server | None = None
        self.url = ""
        self.version = 0

    async def start(self) -> None:
        handler = ActivatorHandler(self.registry, self.reporter, lambda: True)
        self.server = await serve(handler, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def apply(self, *revisions: Revision) -> None:
        self.version += 1
        self.registry.apply(Snapshot(self.version, revisions))

    def metric(self, name: str, **labels: str) -> float:
        value = self.prometheus.get_sample_value(
            name, {"namespace": "default", "revision": KEY.name, **labels}
        )
        return 0.0 if value is None else value

    async def get(self, path: str = "/", **headers: str) -> aiohttp.ClientResponse:
        return await self.session.get(self.url + path, headers={"Host": HOST, **headers})

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        await self.registry.close()


@pytest.fixture
async def rig_factory() -> AsyncIterator[Callable[[int], Rig]]:
    rigs: list[Rig] = []
    async with aiohttp.ClientSession() as session:

        def make(queue_depth: int = 100) -> Rig:
            rig = Rig(session, queue_depth)
            rigs.append(rig)
            return rig

        yield make
        for rig in rigs:
            await rig.close()


@pytest.fixture
async def pods() -> AsyncIterator[Callable[..., FakePod]]:
    made: list[FakePod] = []

    def make(name: str = "pod", ready: bool = True) -> FakePod:
        pod = FakePod(name, ready=ready)
        made.append(pod)
        return pod

    yield make
    for pod in made:
        await pod.stop()


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def test_forwarded_request_carries_knative_headers(
    rig_factory: Callable[[int], Rig], pods: Callable[..., FakePod]
) -> None:
    rig = rig_factory(100)
    pod = pods()
    await pod.start()
    await rig.start()
    rig.apply(revision(pod.pod()))
    async with await rig.session.post(
        rig.url + "/echo?x=1",
        data=b"payload",
        headers={
            "Host": "public.example.com",
            "Knative-Serving-Revision": KEY.name,
            "Knative-Serving-Namespace": KEY.namespace,
            "X-Forwarded-For": "203.0.113.9",
        },
    ) as resp:
        assert resp.status == 200
        assert await resp.text() == "pod POST /echo?x=1 7\n"
        assert "Server-Timing" not in resp.headers  # it never waited
    [seen] = pod.requests
    assert seen.headers["k-original-host"] == "public.example.com"
    assert seen.headers["k-proxy-request"] == "activator"
    assert "knative-serving-revision" not in seen.headers
    assert "knative-serving-namespace" not in seen.headers
    assert seen.headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert seen.body == b"payload"
    assert rig.metric("activator_requests_total", code="200") == 1


async def test_request_held_at_zero_is_served_when_a_pod_appears_with_server_timing(
    rig_factory: Callable[[int], Rig], pods: Callable[..., FakePod]
) -> None:
    rig = rig_factory(100)
    pod = pods(ready=False)
    await pod.start()
    await rig.start()
    rig.apply(revision())
    pending = asyncio.ensure_future(rig.get("/cold"))
    await wait_until(lambda: rig.metric("activator_requests_queued") == 1)
    assert len(rig.pokes) == 1  # the autoscaler was poked at once
    assert rig.pokes[0][0].stat.average_concurrent_requests == 1.0

    rig.apply(revision(pod.pod()))  # listed but not ready: the activator probes it itself
    await asyncio.sleep(0.05)
    assert not pending.done()
    pod.ready = True
    async with await pending as resp:
        assert resp.status == 200
        timing = resp.headers["Server-Timing"]
    assert timing.startswith("activator;dur=")
    assert float(timing.split("=")[1]) > 50
    assert pod.probes >= 2
    assert rig.metric("activator_request_wait_seconds_count") == 1
    assert rig.metric("activator_request_wait_seconds_sum") > 0.05


async def test_a_request_before_the_first_snapshot_waits_for_it(
    rig_factory: Callable[[int], Rig], pods: Callable[..., FakePod]
) -> None:
    """A just (re)started activator does not know the revisions yet: a request for one is not a 404 but waits
    for the platform's first snapshot."""
    rig = rig_factory(100)
    pod = pods()
    await pod.start()
    await rig.start()
    headers = {"Knative-Serving-Revision": KEY.name, "Knative-Serving-Namespace": KEY.namespace}

    async def send() -> tuple[int, str]:
        async with await rig.get("/", **headers) as resp:
            return resp.status, await resp.text()

    request = asyncio.create_task(send())
    await asyncio.sleep(0.3)
    assert not request.done()
    rig.apply(revision(pod.pod()))
    assert await asyncio.wait_for(request, 10) == (200, "pod GET / 0\n")


async def test_unknown_revision_and_unnamed_host_get_404(rig_factory: Callable[[int], Rig]) -> None:
    rig = rig_factory(100)
    await rig.start()
    rig.apply(revision())
    async with await rig.session.get(
        rig.url, headers={"Knative-Serving-Revision": "nope-00009", "Knative-Serving-Namespace": "team"}
    ) as resp:
        assert resp.status == 404
        assert "team/nope-00009" in await resp.text()
    async with await rig.session.get(rig.url, headers={"Host": "example.com"}) as resp:
        assert resp.status == 404
        assert "example.com" in await resp.text()


async def test_activator_probe_is_answered_by_the_activator(rig_factory: Callable[[int], Rig]) -> None:
    rig = rig_factory(100)
    await rig.start()
    async with await rig.session.get(rig.url + "/healthz", headers={"K-Network-Probe": "activator"}) as resp:
        assert resp.status == 200
        assert await resp.text() == "activator"


async def test_full_queue_answers_503_with_retry_after(rig_factory: Callable[[int], Rig]) -> None:
    rig = rig_factory(1)
    await rig.start()
    rig.apply(revision(cc=1))
    held = asyncio.ensure_future(rig.get())
    await wait_until(lambda: rig.metric("activator_requests_queued") == 1)
    async with await rig.get() as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert "queue full" in await resp.text()
    held.cancel()
    await asyncio.gather(held, return_exceptions=True)
    assert rig.metric("activator_requests_total", code="503") == 1


async def test_waiting_past_the_revision_timeout_answers_504(rig_factory: Callable[[int], Rig]) -> None:
    rig = rig_factory(100)
    await rig.start()
    rig.apply(revision(timeout=0.3))
    async with await rig.get() as resp:
        assert resp.status == 504
        assert await resp.text() == "activator request timeout\n"
    assert rig.metric("activator_requests_queued") == 0
    assert rig.metric("activator_requests_total", code="504") == 1


async def test_client_that_disconnects_while_queued_leaves_the_queue_and_is_never_forwarded(
    rig_factory: Callable[[int], Rig], pods: Callable[..., FakePod]
) -> None:
    rig = rig_factory(100)
    pod = pods()
    await pod.start()
    await rig.start()
    rig.apply(revision(cc=1))
    port = int(rig.url.rsplit(":", 1)[1])
    writers = []
    for _ in range(20):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST /gone HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100000\r\n\r\n".encode())
        writer.write(b"x" * 1000)
        await writer.drain()
        writers.append(writer)
    await wait_until(lambda: rig.metric("activator_requests_queued") == 20)
    for writer in writers:
        writer.close()
    await wait_until(lambda: rig.metric("activator_requests_queued") == 0)
    entry = rig.registry.get(KEY)
    assert entry is not None
    assert entry.throttler.in_flight == 0
    rig.apply(revision(pod.pod(), cc=1))
    async with await rig.get("/after") as resp:
        assert resp.status == 200
    assert [r.path for r in pod.requests] == ["/after"]


async def test_refused_connection_moves_the_request_to_another_pod(
    rig_factory: Callable[[int], Rig], pods: Callable[..., FakePod]
) -> None:
    rig = rig_factory(100)
    dead, alive = pods("dead"), pods("alive")
    await dead.start()
    await alive.start()
    dead_pod = dead.pod()
    await dead.stop()  # its port now refuses connections, though the platform still lists it ready
    await rig.start()
    rig.apply(revision(dead_pod, alive.pod(), cc=0))
    statuses = []
    for _ in range(10):
        async with await rig.get() as resp:
            statuses.append(resp.status)
    assert statuses == [200] * 10
    assert len(alive.requests) == 10
    entry = rig.registry.get(KEY)
    assert entry is not None
    assert entry.backends.healthy == [alive.pod().address]
    assert entry.backends.probing == [dead_pod.address]


async def test_only_pod_refusing_waits_for_a_healthy_one(
    rig_factory: Callable[[int], Rig], pods: Callable[..., FakePod]
) -> None:
    rig = rig_factory(100)
    pod = pods()
    await pod.start()
    listed = pod.pod()
    await pod.stop()
    await rig.start()
    rig.apply(revision(listed, cc=1))
    pending = asyncio.ensure_future(rig.get("/retry"))
    entry = rig.registry.get(KEY)
    assert entry is not None
    await wait_until(lambda: entry.backends.probing == [listed.address])
    assert not pending.done()
    await pod.start(port=listed.port)  # the pod comes back on the same address and passes a probe
    async with await pending as resp:
        assert resp.status == 200
    assert [r.path for r in pod.requests] == ["/retry"]


async def test_upstream_failure_before_the_response_answers_502(rig_factory: Callable[[int], Rig]) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    upstream = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    rig = rig_factory(100)
    await rig.start()
    rig.apply(
        revision(
            Pod(name="p", host="127.0.0.1", port=port, stats_port=1, admin_port=1, ready=True, started_at=0.0)
        )
    )
    async with await rig.session.post(rig.url, data=b"body", headers={"Host": HOST}) as resp:
        assert resp.status == 502
    upstream.close()
    await upstream.wait_closed()


async def test_another_revisions_queue_does_not_slow_this_one(
    rig_factory: Callable[[int], Rig], pods: Callable[..., FakePod]
) -> None:
    rig = rig_factory(10_000)
    pod = pods()
    await pod.start()
    await rig.start()
    cold = Revision(key=RevisionKey("default", "cold-00001"), service="cold", configuration="cold")
    rig.apply(revision(pod.pod()), cold)
    port = int(rig.url.rsplit(":", 1)[1])
    writers = []
    for _ in range(300):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: cold-00001.default.svc.cluster.local\r\n\r\n")
        writers.append(writer)
    await wait_until(
        lambda: (
            (
                rig.prometheus.get_sample_value(
                    "activator_requests_queued", {"namespace": "default", "revision": "cold-00001"}
                )
                or 0
            )
            == 300
        )
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(20):
        async with await rig.get() as resp:
            assert resp.status == 200
    assert loop.time() - started < 10  # generous: fails only if the cold queue blocks this revision
    for writer in writers:
        writer.close()
    cold_entry = rig.registry.get(cold.key)
    assert cold_entry is not None
    await wait_until(lambda: cold_entry.throttler.waiting == 0)


async def test_revision_settings_follow_snapshots(
    rig_factory: Callable[[int], Rig], pods: Callable[..., FakePod]
) -> None:
    rig = rig_factory(100)
    pod = pods()
    await pod.start()
    await rig.start()
    rig.apply(revision(pod.pod(), cc=1))
    entry = rig.registry.get(KEY)
    assert entry is not None
    assert entry.throttler.capacity == 1
    rig.apply(replace(revision(pod.pod(), cc=4), timeout_seconds=12.0))
    assert entry.throttler.capacity == 4
    assert entry.timeout == 12.0
    rig.apply()
    assert rig.registry.get(KEY) is None
    async with await rig.get() as resp:
        assert resp.status == 404


async def test_websocket_is_relayed_and_outlives_the_request_timeout(
    rig_factory: Callable[[int], Rig],
) -> None:
    rig = rig_factory(100)
    async with FakeApp() as app:
        await rig.start()
        pod = Pod(
            name="ws", host="127.0.0.1", port=app.port, stats_port=1, admin_port=1, ready=True, started_at=0
        )
        rig.apply(revision(pod, timeout=0.5))
        async with rig.session.ws_connect(rig.url + "/ws", headers={"Host": HOST}) as ws:
            await ws.send_str("first")
            assert await ws.receive_str() == "first"
            await asyncio.sleep(0.8)
            await ws.send_str("after the timeout")
            assert await ws.receive_str() == "after the timeout"


def queue_proxy_pod(qp: QueueProxyProcess, name: str = "qp") -> Pod:
    """How the platform lists a pod whose queue-proxy is `qp`, ready (it was, before its app went down)."""
    return Pod(
        name=name, host="127.0.0.1", port=qp.port, stats_port=1, admin_port=1, ready=True, started_at=0
    )


async def test_platform_turning_a_pod_not_ready_stops_its_traffic_at_once_and_ready_brings_it_back(
    rig_factory: Callable[[int], Rig], pods: Callable[..., FakePod]
) -> None:
    """A pod whose app crashed still accepts connections (its queue-proxy runs), so only the platform's
    readiness can take it out of rotation; it must, at once, and put it back when it is ready again."""
    rig = rig_factory(100)
    crashed, healthy = pods("crashed"), pods("healthy")
    await crashed.start()
    await healthy.start()
    await rig.start()
    rig.apply(revision(crashed.pod(), healthy.pod()))
    crashed.ready = False  # its probe fails from now on, but it would still answer requests
    rig.apply(revision(crashed.pod(), healthy.pod()))
    for _ in range(10):
        async with await rig.get() as resp:
            assert resp.status == 200
    assert crashed.requests == []
    assert len(healthy.requests) == 10
    crashed.ready = True
    rig.apply(revision(crashed.pod(), healthy.pod()))
    entry = rig.registry.get(KEY)
    assert entry is not None
    assert entry.backends.healthy == sorted([crashed.pod().address, healthy.pod().address])


async def test_pod_whose_app_refuses_leaves_rotation_and_the_request_goes_to_another_pod(
    rig_factory: Callable[[int], Rig], pods: Callable[..., FakePod]
) -> None:
    """A real queue-proxy whose app is down answers 502 marked `k-app-refused`: nothing reached the app, so
    the activator sends the request to another pod instead of relaying the 502, and stops using that pod."""
    rig = rig_factory(100)
    alive = pods("alive")
    await alive.start()
    async with QueueProxyProcess.start(user_port=free_port(), wait_ready=False) as qp:
        await rig.start()
        dead = queue_proxy_pod(qp)
        rig.apply(revision(dead, alive.pod(), cc=0))
        statuses = []
        for _ in range(10):
            async with await rig.get() as resp:
                statuses.append((resp.status, await resp.text()))
        assert statuses == [(200, "alive GET / 0\n")] * 10
        entry = rig.registry.get(KEY)
        assert entry is not None
        assert entry.backends.healthy == [alive.pod().address]
        assert entry.backends.probing == [dead.address], "its queue-proxy's probe fails while the app is down"


async def test_only_pod_whose_app_is_down_holds_requests_until_it_is_back_or_the_timeout(
    rig_factory: Callable[[int], Rig],
) -> None:
    """All pods down: the request waits in the activator's queue and gets a 504 at the revision timeout,
    or the pod's answer once its app is back, never an immediate 502."""
    rig = rig_factory(100)
    user_port = free_port()
    async with QueueProxyProcess.start(user_port=user_port, wait_ready=False) as qp:
        await rig.start()
        rig.apply(revision(queue_proxy_pod(qp), timeout=1.5))
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with await rig.get("/timed-out") as resp:
            assert (resp.status, await resp.text()) == (504, "activator request timeout\n")
        assert loop.time() - started >= 1.4
        pending = asyncio.ensure_future(rig.get("/served"))
        await asyncio.sleep(0.5)
        assert not pending.done()
        app = FakePod("app")
        await app.start(port=user_port)  # the app is back behind the same queue-proxy
        try:
            async with await pending as resp:
                assert (resp.status, await resp.text()) == (200, "app GET /served 0\n")
        finally:
            await app.stop()
    assert rig.metric("activator_requests_total", code="502") == 0
