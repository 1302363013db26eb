"""`serving activator` as a process: real platform API (fake server), real websocket stat server (fake
autoscaler), real `serving queue-proxy` processes in front of real apps."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest

from serving.platform import Pod, Revision, RevisionKey
from tests.fakes.activator import ActivatorProcess
from tests.fakes.app import FakeApp
from tests.fakes.platform import FakePlatform
from tests.fakes.queueproxy import QueueProxyProcess
from tests.fakes.statserver import FakeStatServer

KEY = RevisionKey("default", "hello-00001")
HOST = {"Host": "hello-00001.default.svc.cluster.local"}


def revision(*pods: Pod, cc: int = 0, timeout: float = 60.0) -> Revision:
    return Revision(
        key=KEY,
        service="hello",
        configuration="hello",
        container_concurrency=cc,
        timeout_seconds=timeout,
        pods=pods,
    )


def pod_of(qp: QueueProxyProcess, name: str, *, ready: bool = False) -> Pod:
    return Pod(
        name=name,
        host="127.0.0.1",
        port=qp.port,
        stats_port=int(qp.env["QUEUE_STATS_PORT"]),
        admin_port=int(qp.env["QUEUE_ADMIN_PORT"]),
        ready=ready,
        started_at=0.0,
    )


@dataclass
class World:
    platform: FakePlatform
    stats: FakeStatServer
    session: aiohttp.ClientSession


@pytest.fixture
async def world() -> AsyncIterator[World]:
    platform = FakePlatform()
    await platform.start()
    stats = FakeStatServer()
    await stats.start()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield World(platform, stats, session)
    await stats.stop()
    await platform.stop()


@contextlib.asynccontextmanager
async def pod_with_app(name: str, cc: int) -> AsyncIterator[tuple[FakeApp, QueueProxyProcess]]:
    async with (
        FakeApp() as app,
        QueueProxyProcess.start(user_port=app.port, env={"CONTAINER_CONCURRENCY": str(cc)}) as qp,
    ):
        yield app, qp


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def wait_metric(
    activator: ActivatorProcess, session: aiohttp.ClientSession, name: str, value: float
) -> None:
    async def poll() -> None:
        while await activator.metric(session, name, namespace="default", revision=KEY.name) != value:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), 20)


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, str, str | None]:
    async with session.get(url, headers=HOST) as resp:
        return resp.status, await resp.text(), resp.headers.get("Server-Timing")


async def test_held_requests_all_reach_a_pod_started_later_and_the_autoscaler_is_poked(world: World) -> None:
    await world.platform.put(revision(cc=0))
    async with ActivatorProcess.start(platform_url=world.platform.url, autoscaler_url=world.stats.url) as act:
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        held = [asyncio.ensure_future(fetch(world.session, f"{act.url}/echo?i={i}")) for i in range(20)]
        await world.stats.wait_for(lambda s: len(s.stats) > 0)
        poke = world.stats.messages[0]
        assert poke.at - sent_at < 5  # generous: the poke is sent on arrival, not at the next tick
        [first] = poke.stats
        assert (first.namespace, first.name) == ("default", "hello-00001")
        assert first.stat.average_concurrent_requests == 1.0
        assert first.stat.request_count == 1.0
        await wait_metric(act, world.session, "activator_requests_queued", 20)
        assert not any(h.done() for h in held)

        async with pod_with_app("hello-a", cc=0) as (app, qp):
            await world.platform.set_pods(KEY, (pod_of(qp, "hello-a"),))
            results = await asyncio.gather(*held)
            assert [status for status, _, _ in results] == [200] * 20
            assert all(timing and timing.startswith("activator;dur=") for _, _, timing in results)
            assert app.requests == 20
        # The load of the held requests reached the autoscaler in the 1 s reports too.
        await world.stats.wait_for(lambda s: any(x.stat.average_concurrent_requests > 1 for x in s.stats))


async def test_queue_full_gets_503_and_waiting_past_the_timeout_gets_504(world: World) -> None:
    await world.platform.put(revision(cc=1, timeout=2.0))
    env = {"ACTIVATOR_QUEUE_DEPTH": "2"}
    async with ActivatorProcess.start(
        platform_url=world.platform.url, autoscaler_url=world.stats.url, env=env
    ) as act:
        held = [asyncio.ensure_future(fetch(world.session, act.url)) for _ in range(2)]
        await wait_metric(act, world.session, "activator_requests_queued", 2)
        async with world.session.get(act.url, headers=HOST) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "1"
        results = await asyncio.gather(*held)
        assert [(status, body) for status, body, _ in results] == [(504, "activator request timeout\n")] * 2


async def test_client_that_disconnects_while_queued_frees_its_place(world: World) -> None:
    await world.platform.put(revision(cc=1))
    async with ActivatorProcess.start(platform_url=world.platform.url, autoscaler_url=world.stats.url) as act:
        writers = []
        for i in range(10):
            _, writer = await asyncio.open_connection("127.0.0.1", act.port)
            head = f"POST /echo?gone={i} HTTP/1.1\r\nHost: {HOST['Host']}\r\nContent-Length: 5000\r\n\r\n"
            writer.write(head.encode())
            await writer.drain()
            writers.append(writer)
        await wait_metric(act, world.session, "activator_requests_queued", 10)
        for writer in writers:
            writer.close()
        await wait_metric(act, world.session, "activator_requests_queued", 0)
        async with pod_with_app("hello-a", cc=1) as (app, qp):
            await world.platform.set_pods(KEY, (pod_of(qp, "hello-a"),))
            status, _, _ = await fetch(world.session, act.url + "/echo")
            assert status == 200
            assert app.requests == 1  # none of the abandoned requests was forwarded


async def test_pod_killed_mid_traffic_only_fails_its_in_flight_requests(world: World) -> None:
    await world.platform.put(revision(cc=0))
    async with (
        ActivatorProcess.start(platform_url=world.platform.url, autoscaler_url=world.stats.url) as act,
        pod_with_app("hello-a", cc=0) as (app_a, qp_a),
        pod_with_app("hello-b", cc=0) as (app_b, qp_b),
    ):
        await world.platform.set_pods(
            KEY, (pod_of(qp_a, "hello-a", ready=True), pod_of(qp_b, "hello-b", ready=True))
        )
        statuses: list[int] = []
        workers = 4

        async def worker(count: int) -> None:
            for _ in range(count):
                async with world.session.get(act.url + "/sleep?ms=20", headers=HOST) as resp:
                    await resp.read()
                    statuses.append(resp.status)

        tasks = [asyncio.ensure_future(worker(40)) for _ in range(workers)]
        await wait_until(lambda: len(statuses) >= 20)
        qp_a.process.kill()  # gone without draining; the platform still lists it
        await asyncio.gather(*tasks)
        failures = [s for s in statuses if s != 200]
        assert len(statuses) == workers * 40
        assert len(failures) <= workers  # at most the requests in flight on the killed pod
        before = app_b.requests
        for _ in range(10):
            status, _, _ = await fetch(world.session, act.url + "/")
            assert status == 200
        assert app_b.requests == before + 10
        assert app_a.requests > 0


async def test_two_activators_sharing_pods_respect_cc1(world: World) -> None:
    await world.platform.put(revision(cc=1))
    async with (
        pod_with_app("hello-a", cc=1) as (app_a, qp_a),
        pod_with_app("hello-b", cc=1) as (app_b, qp_b),
        ActivatorProcess.start(
            platform_url=world.platform.url,
            autoscaler_url=world.stats.url,
            env={"ACTIVATOR_INDEX": "0", "ACTIVATOR_COUNT": "2", "POD_NAME": "activator-0"},
        ) as first,
        ActivatorProcess.start(
            platform_url=world.platform.url,
            autoscaler_url=world.stats.url,
            env={"ACTIVATOR_INDEX": "1", "ACTIVATOR_COUNT": "2", "POD_NAME": "activator-1"},
        ) as second,
    ):
        pods = sorted(
            [(pod_of(qp_a, "hello-a"), app_a), (pod_of(qp_b, "hello-b"), app_b)], key=lambda p: p[0].address
        )
        await world.platform.set_pods(KEY, tuple(p for p, _ in pods))
        requests = [
            fetch(world.session, act.url + "/sleep?ms=30") for act in (first, second) for _ in range(15)
        ]
        results = await asyncio.gather(*requests)
        assert [status for status, _, _ in results] == [200] * 30
        # Subsetting: each activator used only its own pod, so each pod saw one activator's 15 requests...
        assert [app.requests for _, app in pods] == [15, 15]
        # ...and never more than one at a time.
        assert [app.max_active for _, app in pods] == [1, 1]
        reporters = {s.stat.pod_name for s in world.stats.stats}
        assert reporters == {"activator-0", "activator-1"}


async def test_sigterm_fails_readiness_then_finishes_queued_requests_and_exits_0(world: World) -> None:
    await world.platform.put(revision(cc=1))
    async with ActivatorProcess.start(
        platform_url=world.platform.url, autoscaler_url=world.stats.url, env={"DRAIN_TIMEOUT": "1s"}
    ) as act:
        held = [asyncio.ensure_future(fetch(world.session, act.url + "/echo")) for _ in range(3)]
        await wait_metric(act, world.session, "activator_requests_queued", 3)
        act.terminate()
        await wait_until_async(lambda: act.ready(world.session), False)
        async with world.session.get(act.admin_url + "/readyz") as resp:
            assert "shutting down" in await resp.text()
        async with pod_with_app("hello-a", cc=1) as (app, qp):
            await world.platform.set_pods(KEY, (pod_of(qp, "hello-a"),))
            results = await asyncio.gather(*held)
            assert [status for status, _, _ in results] == [200] * 3
            assert await act.wait(30) == 0
            assert app.requests == 3


async def test_readiness_survives_the_autoscaler_link_and_reports_it(world: World) -> None:
    """The autoscaler down does not take the activator out of rotation (it still serves revisions with pods):
    /readyz stays 200 and says the link is down, and the link comes back by itself."""
    async with ActivatorProcess.start(platform_url=world.platform.url, autoscaler_url=world.stats.url) as act:
        port = world.stats.port

        async def readyz() -> tuple[int, str]:
            async with world.session.get(act.admin_url + "/readyz") as resp:
                return resp.status, await resp.text()

        await world.stats.stop()
        await wait_until_async(lambda: _mentions_autoscaler(readyz), True)
        assert (await readyz())[0] == 200
        await world.stats.start(port)
        await wait_until_async(lambda: _mentions_autoscaler(readyz), False)
        assert await readyz() == (200, "ready\n")
        async with world.session.get(act.url, headers={"K-Network-Probe": "activator"}) as resp:
            assert resp.status == 200
            assert await resp.text() == "activator"


async def _mentions_autoscaler(readyz: Callable[[], Awaitable[tuple[int, str]]]) -> bool:
    return "autoscaler" in (await readyz())[1]


async def hold(port: int, count: int, head: bytes, body: bytes = b"") -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + body)
        writers.append(writer)
    return writers


async def test_held_requests_fit_in_memory(world: World) -> None:
    """1,000 requests held for a revision at zero keep the whole process small (a smoke run of the
    10,000-request measurement in benchmarks/activator_chain.py; 10 KiB each is the budget there)."""
    await world.platform.put(revision(cc=1))
    async with ActivatorProcess.start(platform_url=world.platform.url, autoscaler_url=world.stats.url) as act:
        idle = act.rss_bytes()
        head = f"GET / HTTP/1.1\r\nHost: {HOST['Host']}\r\n\r\n".encode()
        writers = await hold(act.port, 1000, head)
        await wait_metric(act, world.session, "activator_requests_queued", 1000)
        held = act.rss_bytes()
        for writer in writers:
            writer.close()
        assert held < 100 * 2**20, f"{held / 2**20:.1f} MiB with 1,000 held requests"
        assert held - idle < 1000 * 20 * 1024, f"{(held - idle) / 1000 / 1024:.1f} KiB per held request"


async def test_held_request_bodies_stay_within_the_engine_high_water_mark(world: World) -> None:
    """Held requests whose clients already sent a large body: at most the engine's 64 KiB high-water mark
    of each body may be read into memory while the request waits."""
    await world.platform.put(revision(cc=1))
    async with ActivatorProcess.start(platform_url=world.platform.url, autoscaler_url=world.stats.url) as act:
        count = 300
        before = act.rss_bytes()
        head = f"GET / HTTP/1.1\r\nHost: {HOST['Host']}\r\n\r\n".encode()
        writers = await hold(act.port, count, head)
        await wait_metric(act, world.session, "activator_requests_queued", count)
        without_bodies = act.rss_bytes() - before
        for writer in writers:
            writer.close()
        await wait_metric(act, world.session, "activator_requests_queued", 0)

        before = act.rss_bytes()
        head = f"POST / HTTP/1.1\r\nHost: {HOST['Host']}\r\nContent-Length: 4000000\r\n\r\n".encode()
        writers = await hold(act.port, count, head, b"x" * 256 * 1024)
        await wait_metric(act, world.session, "activator_requests_queued", count)
        await asyncio.sleep(0.5)  # let the kernel hand over whatever the engine is willing to read
        with_bodies = act.rss_bytes() - before
        for writer in writers:
            writer.close()
        per_body = (with_bodies - without_bodies) / count
        assert per_body <= 72 * 1024, f"{per_body / 1024:.0f} KiB of each held request body is in memory"


async def test_invalid_environment_exits_1_naming_every_problem() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controller.cli",
        "activator",
        env={"ACTIVATOR_PORT": "x", "ACTIVATOR_COUNT": "0", "PATH": "/usr/bin:/bin"},
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    text = stderr.decode()
    for name in ("ACTIVATOR_PORT", "ACTIVATOR_COUNT", "SERVING_PLATFORM_URL", "AUTOSCALER_URL"):
        assert name in text


async def wait_until_async(
    check: Callable[[], Awaitable[bool]], expected: bool, timeout: float = 20.0
) -> None:
    async def poll() -> None:
        while await check() != expected:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)
