"""Hostile clients against `serving up`, counting every request sent and every answer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from tests.integration.conftest import Load, ServingUp, write_app_service

Start = Callable[..., Awaitable[ServingUp]]

SLOW_CLIENTS = 1000
TEARDOWN = 0.25
"""Seconds after a SIGKILL in which the dead process's listening socket may still accept a connection."""
HEADER_READ_TIMEOUT = 10.0
"""The engine's default: a request head must arrive whole within this long once it has started."""


def _enough_files(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 512
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


async def test_a_thousand_slow_clients_do_not_stop_the_router_serving_others(
    serving_up: Start, tmp_path: Path
) -> None:
    """1,000 connections each sending its request head one byte a second (slowloris): every other client is
    served meanwhile, and the router closes each slow connection once its head has taken longer than the
    header read timeout, without forwarding anything for it."""
    _enough_files(SLOW_CLIENTS)
    up = await serving_up([write_app_service(tmp_path, "hello")])
    assert (await up.get("hello"))[0] == 200  # warm: a pod is up

    slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(SLOW_CLIENTS):
        reader, writer = await asyncio.open_connection("127.0.0.1", up.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: hello.default.localhost\r\n")
        slow.append((reader, writer))
    opened = time.monotonic()
    closed_after: list[float] = []
    answered: list[bytes] = []

    async def watch(reader: asyncio.StreamReader) -> None:
        data = await reader.read(65536)  # b"" when the router closes the connection
        if data:
            answered.append(data[:40])
        closed_after.append(time.monotonic() - opened)

    watchers = [asyncio.create_task(watch(reader)) for reader, _ in slow]

    async def drip() -> None:
        while not all(w.done() for w in watchers):
            for (_, writer), watcher in zip(slow, watchers, strict=True):
                if not watcher.done():
                    writer.write(b"X")
            await asyncio.sleep(1)

    dripper = asyncio.create_task(drip())
    statuses: list[int] = []
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        deadline = opened + HEADER_READ_TIMEOUT + 2
        while time.monotonic() < deadline:
            started = time.monotonic()
            async with session.get(up.url("/"), headers={"Host": up.host("hello")}) as response:
                await response.read()
                statuses.append(response.status)
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.1)
    try:
        await asyncio.wait_for(asyncio.gather(*watchers), HEADER_READ_TIMEOUT + 20)
    finally:
        dripper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dripper
        for _, writer in slow:
            writer.close()

    print(
        f"{SLOW_CLIENTS} slow clients: all closed after {min(closed_after):.1f}-{max(closed_after):.1f}s; "
        f"{len(statuses)} ordinary requests meanwhile, median {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms"
    )
    assert statuses == [200] * len(statuses)
    assert len(statuses) >= 20
    assert answered == [], "nothing may be forwarded for a head that never completed"
    assert len(closed_after) == SLOW_CLIENTS
    assert min(closed_after) >= HEADER_READ_TIMEOUT - 1
    assert max(closed_after) <= HEADER_READ_TIMEOUT + 15
    assert await up.stop() == 0


async def _recovered(up: ServingUp, component: str, old_pid: int, limit: float) -> float:
    """Seconds until `component` runs again under a new pid (restarted by `serving up`) and is ready."""
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        while time.monotonic() - started < limit:
            info = (await up.status())["components"][component]
            if info["pid"] not in (None, old_pid):
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(info["ready_url"]) as response:
                        if response.status == 200:
                            return time.monotonic() - started
            await asyncio.sleep(0.02)
    raise AssertionError(f"{component} was not back within {limit:.0f}s")


async def test_killing_the_activator_or_the_autoscaler_under_traffic_loses_at_most_what_was_in_flight(
    serving_up: Start, tmp_path: Path
) -> None:
    """kill -9 of the activator (in the path: a new revision is in Proxy mode) and of the autoscaler while 8
    clients send back to back: only requests in flight on the killed activator fail, the router sends the
    revision's requests straight to its ready pod while the activator restarts, and both components are back
    by themselves."""
    up = await serving_up([write_app_service(tmp_path, "hello")])
    assert (await up.get("hello"))[0] == 200
    workers = 8
    load = Load(up.url("/?ms=20"), up.host("hello"), workers=workers)
    load.start()
    try:
        await asyncio.sleep(2)
        recovered: dict[str, float] = {}
        kills: list[float] = []
        for component in ("activator", "autoscaler"):
            pid = (await up.status())["components"][component]["pid"]
            kills.append(time.monotonic())
            os.kill(pid, signal.SIGKILL)
            recovered[component] = await _recovered(up, component, pid, 30)
            await asyncio.sleep(2)
    finally:
        await load.stop()
    failures = load.failures()
    sent = len(load.results)
    print(
        f"{sent} requests: {len(failures)} failed; activator back in {recovered['activator']:.2f}s, "
        f"autoscaler in {recovered['autoscaler']:.2f}s"
    )
    # Each failure was in flight at the kill, or was accepted by the dying process's listening socket in the
    # moment the kernel tore it down; none was sent while the activator was down or restarting.
    late = max((min(start - k for k in kills if k <= end) for start, end, _, _ in failures), default=0.0)
    print(f"latest failed request started {late * 1000:.0f} ms after its kill")
    for start, end, code, text in failures:
        print(f"  {[round(start - k, 3) for k in kills]} -> {end - start:.3f}s {code} {text[:150]}")
    assert all(
        any(start <= kill + TEARDOWN <= end + TEARDOWN for kill in kills) for start, end, _, _ in failures
    )
    assert len(failures) <= 2 * workers, failures
    assert sent > 100
    # The system works as before: the restarted autoscaler still scales (here: keeps the pod while busy) and
    # the restarted activator is back in the path.
    assert (await up.get("hello"))[0] == 200
    revision = await up.revision("hello-00001")
    assert revision is not None
    assert revision["ready_pods"] >= 1
    assert await up.stop() == 0


async def test_with_the_autoscaler_hung_revisions_with_pods_serve_and_the_others_wait_for_it(
    serving_up: Start, tmp_path: Path
) -> None:
    """The autoscaler stopped (SIGSTOP: alive, silent) for a few seconds: a revision with a pod keeps serving
    through the activator, a revision at zero holds its requests (none fails), and once the autoscaler
    resumes the held requests are served."""
    hello = write_app_service(tmp_path, "hello")
    cold = write_app_service(
        tmp_path, "cold", annotations={"autoscaling.knative.dev/initial-scale": "0"}, file_name="cold.yaml"
    )
    up = await serving_up([hello, cold], ["--autoscaler-config", "allow-zero-initial-scale=true"])
    assert (await up.get("hello"))[0] == 200
    autoscaler = (await up.status())["components"]["autoscaler"]["pid"]
    os.kill(autoscaler, signal.SIGSTOP)
    try:
        load = Load(up.url("/"), up.host("hello"), workers=4)
        load.start()
        held = [asyncio.create_task(up.get("cold")) for _ in range(20)]
        try:
            await asyncio.sleep(4)
        finally:
            await load.stop()
        assert not any(task.done() for task in held), "a request for a revision at zero did not wait"
    finally:
        os.kill(autoscaler, signal.SIGCONT)
    resumed = time.monotonic()
    answers = await asyncio.wait_for(asyncio.gather(*held), 60)
    served_after = time.monotonic() - resumed
    print(
        f"autoscaler hung 4 s: {len(load.results)} requests to a revision with a pod, "
        f"{len(load.failures())} failed; 20 held for one at zero, served {served_after:.1f}s after it resumed"
    )
    assert load.failures() == []
    assert len(load.results) > 20
    assert [status for status, _ in answers] == [200] * 20
    assert await up.stop() == 0
