"""Benchmark: a bare forwarder built on `serving.http` against the app it forwards to, measured with wrk.

Starts an aiohttp + uvloop hello-world app and a forwarder (every request forwarded to one pool) as separate
processes, runs wrk at several connection counts directly against the app and through the forwarder
(interleaved, repeated), and reports throughput ratio, added latency and the forwarder's CPU per request.
A minimal httptools forwarder runs alongside as a calibration floor.

    python benchmarks/engine_forwarder.py [--duration 5] [--repeat 5] [--connections 1 10 100]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "engine.md"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the two processes under test ------------------------------------------------------------------------


def run_app(port: int) -> None:
    """aiohttp hello world on uvloop: the app both paths end at."""
    import uvloop
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello World!\n")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        await asyncio.Event().wait()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def run_forwarder(port: int, upstream_port: int) -> None:
    """The engine with a handler that forwards every request, unchanged, to one pool."""
    import uvloop

    from serving.http import Exchange, UpstreamPool, serve

    async def main() -> None:
        pool = UpstreamPool("127.0.0.1", upstream_port)

        async def handle(ex: Exchange) -> None:
            await ex.forward(pool, ex.request.headers)

        await serve(handle, "127.0.0.1", port)
        await asyncio.Event().wait()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def run_router(port: int, upstream_port: int, *, task: bool = False) -> None:
    """The ingress router (`serving up`'s and the Kubernetes ingress's) routing every request to one revision
    in Serve mode whose one ready pod is the app: the router's own cost per request, with no queue-proxy
    behind it. With `task`, without its fast path: every request in the engine's handler task."""
    import uvloop

    from controller.ingress.router import Router
    from controller.local.store import Store
    from controller.reconcile.routetable import HostRoute, RouteTable, Split
    from serving.http import serve
    from serving.platform import Pod, Revision, RevisionKey, ScalerStatus

    async def main() -> None:
        key = RevisionKey("default", "hello-00001")
        store = Store()
        store.put_revision(Revision(key=key, service="hello", configuration="hello"))
        app = Pod(
            name="hello-00001-app",
            host="127.0.0.1",
            port=upstream_port,
            stats_port=1,
            admin_port=2,
            ready=True,
            started_at=0.0,
        )
        store.set_pods(key, (app,))
        store.set_status(
            key,
            ScalerStatus(
                desired_pods=1,
                mode="Serve",
                stable_concurrency=0.0,
                panic_concurrency=0.0,
                panic=False,
                excess_burst_capacity=0.0,
                activators=1,
            ),
        )
        router = Router(store, upstream_port, ingress_port=port)
        split = (Split(key, 100),)
        router.set_table(RouteTable([HostRoute("default", "hello", "127.0.0.1", None, split)]))
        await serve(router.handle, "127.0.0.1", port, fast=None if task else router.fast)
        await asyncio.Event().wait()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def run_minimal(port: int, upstream_port: int, *, task: bool = False) -> None:
    """A calibration point, not a product: the least a forwarder can do per request (httptools on uvloop,
    pooled keep-alive upstream connections, GET only, no limits, no flow control, no error handling).

    Measured alongside the engine so that numbers from a busy or slow machine can still be compared: the
    engine's cost relative to this floor is what the engine controls.

    With `task`, each client connection's requests are forwarded by one task, as the engine's are (a handler
    is a coroutine): the task waits on a future for the next request and on another for the response, so
    every request wakes it twice; everything else is the same. The difference between the two is what that
    structure costs per request."""
    import httptools
    import uvloop

    idle: list[Upstream] = []
    connecting: set[asyncio.Future[None]] = set()

    class Upstream(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.client: Client | None = None
            self.out: list[bytes] = []
            self.done: asyncio.Future[None] | None = None
            """With `task`: the forwarding task's wait for this response."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.out.append(data)
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            client, self.client = self.client, None
            assert client is not None
            if not client.transport.is_closing():
                client.transport.write(b"".join(self.out))  # type: ignore[attr-defined]  # transport is set in connection_made
            self.out.clear()
            idle.append(self)
            done, self.done = self.done, None
            if done is not None and not done.done():  # cancelled when its client left
                done.set_result(None)

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpRequestParser(self)
            self.head: list[bytes] = []
            self.queue: collections.deque[bytes] = collections.deque()
            self.waiter: asyncio.Future[None] | None = None
            self.task: asyncio.Task[None] | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def connection_lost(self, exc: Exception | None) -> None:
            if self.task is not None:
                self.task.cancel()

        def data_received(self, data: bytes) -> None:
            self.head.append(data)
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            request = b"".join(self.head)
            self.head.clear()
            if not task:
                self.send(request)
                return
            self.queue.append(request)
            waiter, self.waiter = self.waiter, None
            if waiter is not None:
                waiter.set_result(None)
            elif self.task is None:
                self.task = asyncio.get_running_loop().create_task(self.serve())

        def send(self, request: bytes) -> Upstream | None:
            if idle:
                upstream = idle.pop()
                upstream.client = self
                upstream.transport.write(request)  # type: ignore[attr-defined]  # transport is set in connection_made
                return upstream
            connecting.add(asyncio.ensure_future(self.connect(request)))
            return None

        async def serve(self) -> None:
            loop = asyncio.get_running_loop()
            while True:
                while self.queue:
                    upstream = self.send(self.queue.popleft())
                    if upstream is not None:
                        done = upstream.done = loop.create_future()
                        await done
                self.waiter = loop.create_future()
                await self.waiter

        async def connect(self, request: bytes) -> None:
            loop = asyncio.get_running_loop()
            _, upstream = await loop.create_connection(Upstream, "127.0.0.1", upstream_port)
            upstream.client = self
            upstream.transport.write(request)  # type: ignore[attr-defined]  # transport is set in connection_made
            task = asyncio.current_task()
            if task is not None:
                connecting.discard(task)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(Client, "127.0.0.1", port, backlog=1024)
        await asyncio.Event().wait()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


# -- measurement -----------------------------------------------------------------------------------------


@dataclass
class Run:
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    cpu_us: float | None  # forwarder CPU per request


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def to_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port: int, connections: int, duration: float, measured_pid: int | None) -> Run:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        f"http://127.0.0.1:{port}/",
    ]
    before = cpu_seconds(measured_pid) if measured_pid else 0.0
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    after = cpu_seconds(measured_pid) if measured_pid else 0.0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]  # wrk always prints these lines
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]  # wrk always prints these lines
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.MULTILINE))
    p50 = to_ms(*re.match(r"([\d.]+)(\w+)", latency["50"]).groups())  # type: ignore[union-attr]  # wrk always prints these lines
    p99 = to_ms(*re.match(r"([\d.]+)(\w+)", latency["99"]).groups())  # type: ignore[union-attr]  # wrk always prints these lines
    cpu = (after - before) / requests * 1e6 if measured_pid else None
    return Run(rps, requests, p50, p99, cpu)


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def spawn(*args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.Popen([sys.executable, __file__, *args], env=env)


def best_run(runs: list[Run]) -> Run:
    """The best of repeated runs, metric by metric: on a shared machine other load only ever makes a run
    slower, so the best figures are the closest to what the code itself costs."""
    cpus = [r.cpu_us for r in runs if r.cpu_us is not None]
    return Run(
        rps=max(r.rps for r in runs),
        requests=sum(r.requests for r in runs),
        p50_ms=min(r.p50_ms for r in runs),
        p99_ms=min(r.p99_ms for r in runs),
        cpu_us=min(cpus) if cpus else None,
    )


def benchmark(connections: list[int], duration: float, repeat: int) -> str:
    app_port, engine_port, minimal_port = free_port(), free_port(), free_port()
    app = spawn("--role", "app", "--port", str(app_port))
    engine = spawn("--role", "forwarder", "--port", str(engine_port), "--upstream-port", str(app_port))
    minimal = spawn("--role", "minimal", "--port", str(minimal_port), "--upstream-port", str(app_port))
    try:
        for port, process in ((app_port, app), (engine_port, engine), (minimal_port, minimal)):
            wait_listening(port, process)
        for port in (app_port, engine_port, minimal_port):
            wrk(port, 10, 2, None)  # warm-up
        rows = []
        for c in connections:
            runs: dict[str, list[Run]] = {"direct": [], "engine": [], "minimal": []}
            for _ in range(repeat):
                runs["direct"].append(wrk(app_port, c, duration, None))
                runs["engine"].append(wrk(engine_port, c, duration, engine.pid))
                runs["minimal"].append(wrk(minimal_port, c, duration, minimal.pid))
            d, e, m = (best_run(runs[name]) for name in ("direct", "engine", "minimal"))
            rows.append(
                f"| {c} | {d.rps:,.0f} | {e.rps:,.0f} | **{e.rps / d.rps:.2f}** | {e.cpu_us:.1f} "
                f"| {d.p50_ms:.3f} / {d.p99_ms:.3f} | {e.p50_ms:.3f} / {e.p99_ms:.3f} "
                f"| {e.p99_ms - d.p99_ms:+.3f} | {m.rps / d.rps:.2f} | {m.cpu_us:.1f} |"
            )
            print(rows[-1], flush=True)
    finally:
        for process in (engine, minimal, app):
            process.terminate()
            process.wait(10)
    header = (
        "| connections | direct req/s | engine req/s | engine / direct | engine CPU µs/req "
        "| direct p50 / p99 ms | engine p50 / p99 ms | added p99 ms "
        "| minimal / direct | minimal CPU µs/req |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    return header + "\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--role",
        choices=["bench", "app", "forwarder", "minimal", "minimal-task", "router", "router-task"],
        default="bench",
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream-port", type=int, default=0)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=5, help="wrk runs per path and connection count")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    args = parser.parse_args(argv)
    if args.role == "app":
        run_app(args.port)
        return 0
    if args.role == "forwarder":
        run_forwarder(args.port, args.upstream_port)
        return 0
    if args.role in ("router", "router-task"):
        run_router(args.port, args.upstream_port, task=args.role == "router-task")
        return 0
    if args.role in ("minimal", "minimal-task"):
        run_minimal(args.port, args.upstream_port, task=args.role == "minimal-task")
        return 0
    command = "python benchmarks/engine_forwarder.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    load = os.getloadavg()
    table = benchmark(args.connections, args.duration, args.repeat)
    report = (
        "# Forwarding engine: bare forwarder vs direct\n\n"
        "A forwarder made of `serving.http` alone (every request forwarded unchanged to one pool) in "
        "front of an aiohttp + uvloop hello-world app, against the app directly; a minimal httptools "
        "forwarder (no limits, no flow control, no error handling) runs alongside as the floor any Python "
        "forwarder on uvloop pays. CPU µs/req is the forwarder process's utime + stime (from /proc) over "
        "the requests wrk completed. The machine is shared: compare the engine with the minimal forwarder "
        "measured in the same run rather than with figures from other runs.\n\n"
        f"Command: `{command.strip()}`  \n"
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load average before the run "
        f"{load[0]:.2f}; best of {args.repeat} wrk runs of {args.duration:g} s (`wrk -t1 -cN --latency`) "
        "per figure, direct, engine and minimal runs interleaved.\n\n" + table + "\n"
    )
    print(report)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
