"""Hostile clients against `serving up`, counting every request sent and every answer."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import resource
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest

from tests.integration.conftest import Load, ServingUp, marked_processes, write_app_service

pytestmark = pytest.mark.load


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
    clients send back to back: only responses already under way on the killed activator are lost; the router
    sends the requests it had given the activator, and new ones while it restarts, straight to the revision's
    ready pod; both components are back by themselves."""
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
    # Only responses already under way on the killed activator are lost: a GET it took down with it before
    # answering is sent again, to the pod (never a 502 or 503 from the router).
    assert {code for _, _, code, _ in failures} <= {0}, failures
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


MISBEHAVING_APP = '''"""`/` answers at once; `/slow` takes 5 s; `/close` promises 1,000 bytes and hangs up
after 10; `/big` answers 10 MB."""
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BIG = bytes(range(256)) * (10 * 1024 * 1024 // 256)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/slow":
            time.sleep(5)
        if self.path == "/close":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.close_connection = True
            return
        body = BIG if self.path == "/big" else b"ok\\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True


Server(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''

MISBEHAVING_SERVICE = """apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: rough
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: "1"
    spec:
      timeoutSeconds: 1
      containers:
        - image: example/rough
          command: ["{python}", "app.py"]
"""


def _process_usage(pids: list[int]) -> dict[int, tuple[int, int]]:
    """(open file descriptors, resident KiB) of each live pid."""
    usage: dict[int, tuple[int, int]] = {}
    for pid in pids:
        try:
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        usage[pid] = (fds, rss)
    return usage


async def test_ten_thousand_requests_to_a_misbehaving_app_get_the_right_answers_and_leak_nothing(
    serving_up: Start, tmp_path: Path
) -> None:
    """An app that is slower than the revision's timeout, hangs up mid-response or answers 10 MB, among
    10,000 requests: 504 in bounded time, a cut response (never a 200 with a short body), the 10 MB whole;
    and the platform's processes hold no more file descriptors or memory afterwards than before."""
    (tmp_path / "app.py").write_text(MISBEHAVING_APP)
    service = tmp_path / "rough.yaml"
    service.write_text(MISBEHAVING_SERVICE.format(python=sys.executable))
    up = await serving_up([service])
    host = up.host("rough")
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one(path: str) -> tuple[str, int, int, float]:
            started = time.monotonic()
            try:
                async with session.get(up.url(path), headers={"Host": host}) as response:
                    body = await response.read()
                    return path, response.status, len(body), time.monotonic() - started
            except aiohttp.ClientPayloadError:
                return path, -1, 0, time.monotonic() - started  # cut mid-body, as the app did

        async def run(paths: list[str]) -> list[tuple[str, int, int, float]]:
            return list(await asyncio.gather(*(one(p) for p in paths)))

        await run(["/"] * 200 + ["/close"] * 5 + ["/big"] * 2)  # warm: pools, buffers, the pod
        platform = [pid for pid, cmdline in marked_processes(up.marker) if "app.py" not in cmdline]
        before = _process_usage(platform)
        paths = ["/"] * 9850 + ["/close"] * 100 + ["/big"] * 30
        random.Random(7).shuffle(paths)
        started = time.monotonic()
        # The slow ones on their own connections, so that their time is theirs, not the client's queue's;
        # timed from the moment their head was written: starting 10,000 requests keeps this test's own event
        # loop busy for seconds on a slow machine, and a request created meanwhile is sent only after that.
        sent_at = aiohttp.TraceConfig()

        async def head_sent(_: object, context: SimpleNamespace, __: object) -> None:
            context.trace_request_ctx["sent"] = time.monotonic()

        sent_at.on_request_headers_sent.append(head_sent)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), trace_configs=[sent_at]
        ) as unqueued:
            late: list[float] = []

            async def slow_one() -> tuple[str, int, int, float]:
                sent: dict[str, float] = {"started": time.monotonic()}
                async with unqueued.get(
                    up.url("/slow"), headers={"Host": host}, trace_request_ctx=sent
                ) as response:
                    body = await response.read()
                    late.append(sent["sent"] - sent["started"])
                    return "/slow", response.status, len(body), time.monotonic() - sent["sent"]

            slow_task = asyncio.gather(*(slow_one() for _ in range(20)))
            results = await run(paths) + list(await slow_task)
        took = time.monotonic() - started
    await asyncio.sleep(2)  # the clients have hung up: what their connections held is released
    after = _process_usage(platform)

    by_path: dict[str, collections.Counter[tuple[int, int]]] = {}
    for path, status, size, _ in results:
        by_path.setdefault(path, collections.Counter())[(status, size)] += 1
    slow = [elapsed for path, _, _, elapsed in results if path == "/slow"]
    growth = {pid: (after[pid][0] - fds, (after[pid][1] - rss) // 1024) for pid, (fds, rss) in before.items()}
    print(
        f"10,000 requests in {took:.1f}s: {dict(by_path)}; /slow answered in at most {max(slow):.1f}s "
        f"(their heads written up to {max(late):.1f}s after they were started); "
        f"per platform process (fds, MiB) growth: {sorted(growth.values())}"
    )
    assert by_path["/"] == {(200, 3): 9850}
    assert by_path["/big"] == {(200, 10 * 1024 * 1024): 30}
    assert {status for status, _ in by_path["/slow"]} == {504}
    assert max(slow) < 1 + 3, "the revision's 1 s timeout bounds a slow request"
    assert all(status in (-1, 502) for status, _ in by_path["/close"]), by_path["/close"]
    # Connection pools may keep an idle connection per request that was in flight at once (32 + 20); a leak
    # of one descriptor per request would be thousands.
    for pid, (fd_growth, mib_growth) in growth.items():
        assert fd_growth <= 64, f"process {pid} holds {fd_growth} more file descriptors"
        assert mib_growth <= 40, f"process {pid} grew by {mib_growth} MiB"
    assert await up.stop() == 0


async def test_pods_stopped_with_requests_longer_than_the_quiet_period_finish_them(
    serving_up: Start, tmp_path: Path
) -> None:
    """A rollout takes the old revision's pods away (SIGTERM) while requests of 8 s are in flight on them, far
    longer than the 1 s drain quiet period: every one completes, answered by the old revision."""
    annotations = {"autoscaling.knative.dev/min-scale": "2"}
    yaml = write_app_service(tmp_path, "long", target="v1", annotations=annotations)
    up = await serving_up([yaml], ["--autoscaler-config", "scale-to-zero-grace-period=1s"])
    await up.wait_revision("long-00001", lambda r: r["ready_pods"] == 2, 60, "v1 never had its two pods")
    in_flight = [asyncio.create_task(up.get("long", "/?ms=8000")) for _ in range(6)]
    await asyncio.sleep(0.5)
    write_app_service(tmp_path, "long", target="v2", annotations=annotations)
    await up.wait_revision(
        "long-00001", lambda r: r["terminating_pods"] >= 1, 30, "the old revision's pods were not stopped"
    )
    assert not any(task.done() for task in in_flight), "the requests ended before their pods were stopped"
    answers = await asyncio.wait_for(asyncio.gather(*in_flight), 60)
    assert [(status, body.split()[:2]) for status, body in answers] == [(200, ["v1", "long-00001"])] * 6
    assert (await up.get("long"))[1].startswith("v2 long-00002")
    assert await up.stop() == 0


OVERLOAD_SECONDS = 30.0
SERVICE_MS = 50
"""Each request holds its pod's one slot this long: two pods serve 40 requests a second."""


async def _open_loop(
    session: aiohttp.ClientSession, url: str, host: str, rate: float, seconds: float
) -> list[tuple[int, float, str | None]]:
    """Requests sent at a fixed rate whatever the answers (an open loop, as real clients arrive), each
    recorded as (status, seconds, Retry-After); a transport failure is status -1."""

    async def one() -> tuple[int, float, str | None]:
        sent = time.monotonic()
        try:
            async with session.get(url, headers={"Host": host}) as response:
                await response.read()
                return response.status, time.monotonic() - sent, response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError):
            return -1, time.monotonic() - sent, None

    tasks: list[asyncio.Task[tuple[int, float, str | None]]] = []
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one()))
    return list(await asyncio.gather(*tasks))


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def test_ten_times_the_capacity_for_thirty_seconds_sheds_the_excess_fast(
    serving_up: Start, tmp_path: Path
) -> None:
    """A revision at its max-scale (2 pods, containerConcurrency 1, 50 ms a request: 40 requests a second)
    offered 400 a second for 30 s: the excess gets a fast 503 with Retry-After, the admitted requests keep
    about the latency they have at half the capacity, the revision serves its full capacity throughout, and
    the platform's memory stays bounded and comes back afterwards."""
    annotations = {"autoscaling.knative.dev/min-scale": "2", "autoscaling.knative.dev/max-scale": "2"}
    yaml = write_app_service(tmp_path, "busy", annotations=annotations, container_concurrency=1)
    up = await serving_up([yaml])
    await up.wait_revision("busy-00001", lambda r: r["ready_pods"] == 2, 60, "the two pods never came up")
    platform = [pid for pid, cmdline in marked_processes(up.marker) if "app.py" not in cmdline]
    url, host = up.url(f"/?ms={SERVICE_MS}"), up.host("busy")
    capacity = 2 * 1000 / SERVICE_MS
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        baseline = await _open_loop(session, url, host, capacity / 2, 5)
        before = _process_usage(platform)
        peak = dict(before)

        async def watch_memory() -> None:
            while True:
                for pid, (fds, rss) in _process_usage(platform).items():
                    peak[pid] = (max(peak[pid][0], fds), max(peak[pid][1], rss))
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(watch_memory())
        try:
            started = time.monotonic()
            overload = await _open_loop(session, url, host, capacity * 10, OVERLOAD_SECONDS)
            took = time.monotonic() - started
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await asyncio.sleep(3)
        after = _process_usage(platform)
        revision = await up.revision("busy-00001")

    calm = [seconds for status, seconds, _ in baseline if status == 200]
    served = [seconds for status, seconds, _ in overload if status == 200]
    shed = [(seconds, retry) for status, seconds, retry in overload if status == 503]
    others = collections.Counter(status for status, _, _ in overload if status not in (200, 503))
    mib = {
        pid: ((peak[pid][1] - rss) // 1024, (after[pid][1] - rss) // 1024) for pid, (_, rss) in before.items()
    }
    shed_times = [seconds for seconds, _ in shed]

    def ms(values: list[float], q: float) -> str:
        return f"{_quantile(values, q) * 1000:.1f} ms"

    print(
        f"overload: {len(overload)} requests in {took:.1f}s at 10x capacity; {len(served)} served "
        f"({len(served) / took:.1f}/s of {capacity:.0f}/s), p50 {ms(served, 0.5)}, p99 {ms(served, 0.99)} "
        f"(at half capacity: p50 {ms(calm, 0.5)}, p99 {ms(calm, 0.99)}); {len(shed)} shed with 503, "
        f"p50 {ms(shed_times, 0.5)}, p99 {ms(shed_times, 0.99)}; other: {dict(others)}; "
        f"platform memory growth (peak, after) MiB: {sorted(mib.values())}"
    )
    assert len(calm) == len(baseline), "at half capacity every request is served"
    assert not others, f"every request is served or shed: {others}"
    assert len(served) + len(shed) == len(overload)
    assert {retry for _, retry in shed} == {"1"}, "every 503 says when to retry"
    assert len(served) >= 0.8 * capacity * OVERLOAD_SECONDS, "the revision keeps serving its full capacity"
    assert _quantile(shed_times, 0.99) < SERVICE_MS / 1000, "the excess learns at once"
    # One request may wait per slot: an admitted request waits for at most about one service time.
    assert _quantile(served, 0.5) <= _quantile(calm, 0.5) + 2 * SERVICE_MS / 1000
    assert _quantile(served, 0.99) <= _quantile(calm, 0.99) + 4 * SERVICE_MS / 1000
    for pid, (peak_mib, after_mib) in mib.items():
        assert peak_mib <= 40, f"process {pid} grew by {peak_mib} MiB under overload"
        assert after_mib <= 10, f"process {pid} kept {after_mib} MiB after the overload"
    assert revision is not None
    assert revision["ready_pods"] == 2
    assert await up.stop() == 0
