"""Benchmark: the activator hop in front of a queue-proxy and an app, as separate processes on this machine.

Three measurements, written to benchmarks/results/activator.md:
1. CPU per request of the activator hop vs the queue-proxy hop: wrk -> activator -> queue-proxy -> app; the
   CPU time of both proxy processes over the same requests (target: activator <= 1.2 x queue-proxy).
2. Cold-start hand-over: a request held for a revision at zero, then a pod that starts failing its probe
   and becomes ready a random 50-250 ms later; time from the pod's first successful probe answer to the held
   request arriving at it, over N cold starts (target p95 <= 50 ms).
3. Resident memory of a fresh activator holding 10,000 requests for a revision at zero (target <= 150 MiB).

    python benchmarks/activator_chain.py [--duration 10] [--repeat 3] [--connections 10] [--cold-starts 20]
                                         [--held 10000] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shlex
import statistics
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.platform import Pod, Revision, RevisionKey  # noqa: E402  # after the path set-up above
from tests.fakes.activator import ActivatorProcess  # noqa: E402
from tests.fakes.platform import FakePlatform  # noqa: E402
from tests.fakes.pod import FakePod  # noqa: E402
from tests.fakes.process import free_port  # noqa: E402
from tests.fakes.queueproxy import QueueProxyProcess  # noqa: E402
from tests.fakes.statserver import FakeStatServer  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "activator.md"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
KEY = RevisionKey("default", "hello-00001")
HOST = "hello-00001.default.svc.cluster.local"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def revision(key: RevisionKey, *pods: Pod, cc: int = 0) -> Revision:
    return Revision(key=key, service=key.name, configuration=key.name, container_concurrency=cc, pods=pods)


@dataclass
class HopRun:
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    activator_us: float
    queue_proxy_us: float


async def wrk(url: str, connections: int, duration: float) -> tuple[float, int, float, float]:
    process = await asyncio.create_subprocess_exec(
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        "-H",
        f"Host: {HOST}",
        url,
        stdout=asyncio.subprocess.PIPE,
    )
    out = (await process.communicate())[0].decode()
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", out))
    requests = int(_find(r"(\d+) requests in", out))
    found = re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.MULTILINE)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    latency = {p: float(v) * scale[u] for p, v, u in found}
    return rps, requests, latency["50"], latency["99"]


def _find(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"{pattern!r} not in wrk output:\n{text}")
    return match.group(1)


async def spawn_app() -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.app",
        "--port",
        str(port),
        "--hello-only",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    await asyncio.wait_for(process.stdout.readline(), 30)  # "listening on ..."
    return process, port


async def hop_cpu(connections: int, duration: float, repeat: int) -> list[HopRun]:
    platform, stats = FakePlatform(), FakeStatServer()
    await platform.start()
    await stats.start()
    app, app_port = await spawn_app()
    runs: list[HopRun] = []
    try:
        async with (
            QueueProxyProcess.start(user_port=app_port, env={"CONTAINER_CONCURRENCY": "0"}) as qp,
            ActivatorProcess.start(
                platform_url=platform.url, autoscaler_url=stats.url, env={"LOG_LEVEL": "warning"}
            ) as act,
        ):
            pod = Pod(
                name="p",
                host="127.0.0.1",
                port=qp.port,
                stats_port=0,
                admin_port=0,
                ready=True,
                started_at=0.0,
            )
            await platform.put(revision(KEY, pod))
            await wrk(act.url + "/", connections, 2)  # warm-up
            for _ in range(repeat):
                before = cpu_seconds(act.pid), cpu_seconds(qp.pid)
                rps, requests, p50, p99 = await wrk(act.url + "/", connections, duration)
                after = cpu_seconds(act.pid), cpu_seconds(qp.pid)
                runs.append(
                    HopRun(
                        rps,
                        requests,
                        p50,
                        p99,
                        (after[0] - before[0]) / requests * 1e6,
                        (after[1] - before[1]) / requests * 1e6,
                    )
                )
                print(runs[-1], flush=True)
    finally:
        app.terminate()
        await app.wait()
        await stats.stop()
        await platform.stop()
    return runs


async def cold_starts(count: int) -> list[float]:
    """Milliseconds from a pod's first passing probe answer to the held request reaching it."""
    platform, stats = FakePlatform(), FakeStatServer()
    await platform.start()
    await stats.start()
    rng = random.Random(1)
    delays: list[float] = []
    try:
        async with (
            ActivatorProcess.start(
                platform_url=platform.url, autoscaler_url=stats.url, env={"LOG_LEVEL": "warning"}
            ) as act,
            aiohttp.ClientSession() as session,
        ):
            for index in range(count):
                key = RevisionKey("default", f"cold-{index:05d}")
                await platform.put(revision(key, cc=1))
                host = f"{key.name}.default.svc.cluster.local"
                held = asyncio.ensure_future(session.get(act.url + "/", headers={"Host": host}))
                queued = partial(
                    act.metric, session, "activator_requests_queued", namespace="default", revision=key.name
                )
                await until(queued, 1.0)
                pod = FakePod(key.name, ready=False)
                await pod.start()
                await platform.put(revision(key, pod.pod(ready=False), cc=1))
                await asyncio.sleep(rng.uniform(0.05, 0.25))
                pod.ready = True
                async with await held as resp:
                    assert resp.status == 200, resp.status
                assert pod.first_probe_passed_at is not None
                delays.append((pod.requests[0].at - pod.first_probe_passed_at) * 1000)
                print(f"cold start {index}: {delays[-1]:.1f} ms", flush=True)
                await pod.stop()
                await platform.remove(key)
    finally:
        await stats.stop()
        await platform.stop()
    return delays


async def until(read: Callable[[], Awaitable[float]], value: float, limit: float = 60.0) -> None:
    """Poll a metric (over HTTP, so there is no event to wait on) until it reads `value`."""
    async with asyncio.timeout(limit):
        while await read() != value:  # noqa: ASYNC110  # polling a remote process
            await asyncio.sleep(0.05)


async def held_memory(count: int) -> tuple[float, float]:
    """RSS (MiB) of a fresh activator idle, then holding `count` requests for a revision at zero."""
    platform, stats = FakePlatform(), FakeStatServer()
    await platform.start()
    await stats.start()
    await platform.put(revision(KEY, cc=1))
    writers: list[asyncio.StreamWriter] = []
    try:
        async with (
            ActivatorProcess.start(
                platform_url=platform.url, autoscaler_url=stats.url, env={"LOG_LEVEL": "warning"}
            ) as act,
            aiohttp.ClientSession() as session,
        ):
            idle = act.rss_bytes() / 2**20
            head = f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
            for _ in range(count):
                _, writer = await asyncio.open_connection("127.0.0.1", act.port)
                writer.write(head)
                writers.append(writer)
            await until(
                lambda: act.metric(
                    session, "activator_requests_queued", namespace="default", revision=KEY.name
                ),
                count,
                300,
            )
            await asyncio.sleep(1.0)
            held = act.rss_bytes() / 2**20
            for writer in writers:
                writer.close()
    finally:
        await stats.stop()
        await platform.stop()
    return idle, held


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


async def run(args: argparse.Namespace) -> str:
    hops = await hop_cpu(args.connections, args.duration, args.repeat)
    delays = await cold_starts(args.cold_starts)
    idle, held = await held_memory(args.held)
    act_us = statistics.median(h.activator_us for h in hops)
    qp_us = statistics.median(h.queue_proxy_us for h in hops)
    lines = [
        "## 1. CPU per request: activator hop vs queue-proxy hop",
        "",
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s -> activator -> queue-proxy (CC=0) -> "
        f"aiohttp app; {args.repeat} runs.",
        "",
        "| run | req/s | p50 ms | p99 ms | activator CPU µs/req | queue-proxy CPU µs/req | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for index, h in enumerate(hops, 1):
        lines.append(
            f"| {index} | {h.rps:,.0f} | {h.p50_ms:.2f} | {h.p99_ms:.2f} | {h.activator_us:.1f} "
            f"| {h.queue_proxy_us:.1f} | {h.activator_us / h.queue_proxy_us:.2f} |"
        )
    lines += [
        "",
        f"Median: activator {act_us:.1f} µs/req, queue-proxy {qp_us:.1f} µs/req, "
        f"ratio **{act_us / qp_us:.2f}** (target ≤ 1.2).",
        "",
        "## 2. Cold-start hand-over",
        "",
        f"{len(delays)} cold starts: a request held for a revision at zero; a pod listed unready that "
        "starts passing the activator's probe 50-250 ms later. Time from the pod's first passing probe "
        "answer to the held request arriving at the pod:",
        "",
        f"p50 **{statistics.median(delays):.1f} ms**, p95 **{percentile(delays, 0.95):.1f} ms**, "
        f"max {max(delays):.1f} ms (target p95 ≤ 50 ms).",
        "",
        "## 3. Memory with held requests",
        "",
        f"A fresh activator: **{idle:.1f} MiB** RSS idle, **{held:.1f} MiB** holding {args.held:,} GET "
        f"requests for a revision at zero ({(held - idle) * 1024 / args.held:.1f} KiB each; "
        "target ≤ 150 MiB in total).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cold-starts", type=int, default=20)
    parser.add_argument("--held", type=int, default=10_000)
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    args = parser.parse_args(argv)
    command = "python benchmarks/activator_chain.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    load = os.getloadavg()
    body = asyncio.run(run(args))
    report = (
        "# Activator benchmarks\n\n"
        f"Command: `{command.strip()}`  \n"
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load average before the run "
        f"{load[0]:.2f}. Every component is a separate process on 127.0.0.1.\n\n" + body
    )
    print(report)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
