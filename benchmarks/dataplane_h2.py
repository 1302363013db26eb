"""HTTP/2 (h2c) data-plane overhead: one h2c app measured directly, through our queue-proxy (h2c in, h2c out
to the app) and through nginx as an HTTP/2 reverse proxy, with `h2load`, every path in the same run.

The HTTP/1.1 companion is benchmarks/dataplane.py, whose process helpers, queue-proxy environment and CPU
accounting this script imports. The app is nginx itself serving a fixed 11-byte body over h2c only
(`listen ... http2` without TLS), one process: cheap beside any proxy, the same for every row, and it proves
that a proxied request reached the app over HTTP/2 (an HTTP/1.1 request to it fails). The nginx reference
proxies with `grpc_pass`, its only HTTP/2 upstream module; it forwards plain HTTP/2 requests too, over one
upstream connection per request in flight (kept alive, never multiplexed), where ours multiplexes streams.

    python benchmarks/dataplane_h2.py --runs 3 --duration 5 --out benchmarks/results/dataplane-h2.md
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.dataplane import (  # noqa: E402  # after the path set-up above
    NGINX,
    Processes,
    Skipped,
    Target,
    _row,
    cpu_seconds,
    free_port,
    hot_path_compiled,
    nginx_binary,
    path_queue_proxy,
    rss_mib,
    wait_started,
)

LOADS: Final = ((1, 1), (10, 10))
"""(connections, concurrent streams per connection): one request at a time for latency, 100 in flight for
throughput and CPU per request."""
BODY: Final = b"hello world"
"""What the app answers (APP_SERVER)."""

_NGINX_COMMON: Final = """\
daemon off;
master_process off;
worker_processes 1;
pid {scratch}/{role}.pid;
error_log {scratch}/{role}-error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {scratch}/{role}-client_body;
    proxy_temp_path {scratch}/{role}-proxy;
    fastcgi_temp_path {scratch}/{role}-fastcgi;
    uwsgi_temp_path {scratch}/{role}-uwsgi;
    scgi_temp_path {scratch}/{role}-scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
{body}}}
"""
"""One process, no master (as dataplane.py's nginx), so its CPU is all one pid's. `keepalive_requests` also
bounds the requests of an HTTP/2 connection in nginx 1.22 (1000 by default, then GOAWAY): lifted on both
sides, as our queue-proxy never retires a connection."""

APP_SERVER: Final = """\
    server {
        listen 127.0.0.1:{port} http2;
        location / {
            default_type text/plain;
            return 200 "hello world";
        }
    }
"""

PROXY_SERVER: Final = """\
    upstream app {
        server 127.0.0.1:{app_port};
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:{port} http2;
        location / {
            grpc_pass grpc://app;
        }
    }
"""


def _nginx(processes: Processes, role: str, server: str) -> tuple[int, int]:
    """Start one nginx process with `server` (its `{port}` filled in); (port, pid)."""
    nginx = nginx_binary()
    if nginx is None:
        raise Skipped("nginx is not installed (Debian: apt-get install nginx-light)")
    scratch, port = processes.directory(), free_port()
    conf = scratch / f"{role}.conf"
    body = server.replace("{port}", str(port))
    conf.write_text(_NGINX_COMMON.format(scratch=scratch, role=role, body=body))
    error_log = scratch / f"{role}-error.log"
    process = processes.start([nginx, "-p", str(scratch), "-e", str(error_log), "-c", str(conf)])
    wait_started(process, port, f"nginx ({role})")
    return port, process.pid


def start_app(processes: Processes) -> tuple[int, int]:
    """The h2c app: (port, pid). Skipped without nginx (then nothing here can run)."""
    return _nginx(processes, "app", APP_SERVER)


def path_direct(processes: Processes, app_port: int) -> Target:
    return Target("direct", f"http://127.0.0.1:{app_port}/", None)


def path_nginx(processes: Processes, app_port: int) -> Target:
    """The yardstick: nginx terminating h2c and proxying each request over HTTP/2 (`grpc_pass`) to the app."""
    port, pid = _nginx(processes, "proxy", PROXY_SERVER.replace("{app_port}", str(app_port)))
    return Target(NGINX, f"http://127.0.0.1:{port}/", pid)


PathFactory = Callable[[Processes, int], Target]
PATHS: Final[dict[str, PathFactory]] = {
    "direct": path_direct,
    "nginx": path_nginx,
    # As dataplane.py starts it; a request that arrives over HTTP/2 goes to the app over its H2UpstreamPool.
    "qp-cc0": lambda processes, port: path_queue_proxy(processes, port, 0, "h2c"),
    "qp-cc100": lambda processes, port: path_queue_proxy(processes, port, 100, "h2c"),
}
DEFAULT_PATHS: Final = "direct,nginx,qp-cc0,qp-cc100"


@dataclass(frozen=True)
class Measurement:
    target: str
    connections: int
    streams: int
    """Concurrent streams per connection (h2load -m)."""
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    proxy_cpu_us: float | None
    """Proxy CPU microseconds per request (user + system), None for the direct path."""
    proxy_sys_us: float | None
    """The kernel's share of `proxy_cpu_us`."""
    app_cpu_us: float
    """The app's CPU microseconds per request: what each proxy's way of reaching it costs the app."""

    @property
    def load(self) -> str:
        return f"{self.connections}x{self.streams}"


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank, so every figure is a latency some request really had."""
    return sorted_values[max(math.ceil(p / 100 * len(sorted_values)) - 1, 0)]


@dataclass(frozen=True)
class H2loadRun:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def run_h2load(url: str, connections: int, streams: int, duration: float) -> H2loadRun:
    """One h2load run of `duration` seconds with one thread; latency percentiles from its per-request log."""
    argv = ["h2load", "-t1", f"-c{connections}", f"-m{streams}", f"-D{duration * 1000:.0f}ms"]
    with tempfile.TemporaryDirectory(prefix="dataplane-h2-") as scratch:
        log = Path(scratch) / "requests.tsv"
        out = subprocess.run(
            [*argv, f"--log-file={log}", url],
            capture_output=True,
            text=True,
            check=False,
            timeout=duration + 60,
        ).stdout
        # Columns: start (us since the epoch), status (-1 when the request failed), duration (us).
        latencies = sorted(float(line.split("\t")[2]) / 1000 for line in log.read_text().splitlines() if line)
    finished = re.search(r"finished in \S+, ([\d.]+) req/s", out)
    counts = re.search(r"requests: \d+ total, \d+ started, (\d+) done, \d+ succeeded, (\d+) failed", out)
    statuses = re.search(r"status codes: \d+ 2xx, \d+ 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if finished is None or counts is None or statuses is None:
        raise RuntimeError(f"unexpected h2load output: {out[-500:]!r}")
    errors = int(counts.group(2)) + int(statuses.group(1)) + int(statuses.group(2))
    if not latencies:
        raise RuntimeError(f"h2load completed no request: {out[-500:]!r}")
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return H2loadRun(float(finished.group(1)), p50, p99, int(counts.group(1)), errors)


def measure(
    target: Target, app_pid: int, load: tuple[int, int], duration: float, warm_up: float
) -> Measurement:
    connections, streams = load
    run_h2load(target.url, connections, streams, warm_up)  # connections and upstream pools
    pids = [app_pid, *([target.proxy_pid] if target.proxy_pid else [])]
    before = {pid: cpu_seconds(pid) for pid in pids}
    run = run_h2load(target.url, connections, streams, duration)
    after = {pid: cpu_seconds(pid) for pid in pids}
    per_request = 1e6 / max(run.requests, 1)

    def cpu(pid: int) -> float:
        return (sum(after[pid]) - sum(before[pid])) * per_request

    proxy_cpu = proxy_sys = None
    if target.proxy_pid:
        proxy_cpu = cpu(target.proxy_pid)
        proxy_sys = (after[target.proxy_pid][1] - before[target.proxy_pid][1]) * per_request
    return Measurement(
        target.name, connections, streams, run.rps, run.p50_ms, run.p99_ms, run.requests, run.errors,
        proxy_cpu, proxy_sys, cpu(app_pid),
    )  # fmt: skip


@dataclass
class Report:
    command: str
    runs: list[list[Measurement]] = field(default_factory=list)
    idle_rss: dict[str, float] = field(default_factory=dict)
    load_at_start: tuple[float, ...] = field(default_factory=os.getloadavg)
    skipped: dict[str, str] = field(default_factory=dict)
    compiled: bool = field(default_factory=hot_path_compiled)

    def _values(self, target: str, load: str, attr: str) -> list[float]:
        return [
            float(getattr(m, attr))
            for run in self.runs
            for m in run
            if (m.target, m.load) == (target, load) and getattr(m, attr) is not None
        ]

    def has(self, target: str) -> bool:
        return any(m.target == target for run in self.runs for m in run)

    def median(self, target: str, load: str, attr: str) -> float | None:
        values = self._values(target, load, attr)
        return statistics.median(values) if values else None

    def ratio(self, target: str, reference: str, load: str, attr: str) -> float | None:
        """Median over runs of target / reference, each ratio taken within one run."""
        pairs = zip(self._values(target, load, attr), self._values(reference, load, attr), strict=False)
        ratios = [t / r for t, r in pairs if r > 0]
        return statistics.median(ratios) if ratios else None


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _summary(report: Report, targets: list[str]) -> Iterator[str]:
    with_nginx = report.has(NGINX)
    yield _row(
        "path", "conns x streams", "req/s", "vs direct", "vs nginx", "p50 ms", "p99 ms", "p99 - nginx ms",
        "proxy CPU us/req", "of which kernel", "CPU x nginx", "app CPU us/req",
    )  # fmt: skip
    yield _row(*["---"] * 12)
    for connections, streams in LOADS:
        load = f"{connections}x{streams}"
        nginx_p99 = report.median(NGINX, load, "p99_ms") if with_nginx else None
        for target in targets:
            p99 = report.median(target, load, "p99_ms")
            proxied = target != "direct"
            yield _row(
                target,
                load,
                _fmt(report.median(target, load, "rps"), ".0f"),
                _fmt(report.ratio(target, "direct", load, "rps"), ".2f") if proxied else "1",
                _fmt(report.ratio(target, NGINX, load, "rps"), ".2f") if proxied and with_nginx else "",
                _fmt(report.median(target, load, "p50_ms"), ".3f"),
                _fmt(p99, ".3f"),
                f"{p99 - nginx_p99:+.3f}" if proxied and p99 is not None and nginx_p99 is not None else "",
                _fmt(report.median(target, load, "proxy_cpu_us"), ".1f"),
                _fmt(report.median(target, load, "proxy_sys_us"), ".1f"),
                _fmt(report.ratio(target, NGINX, load, "proxy_cpu_us"), ".2f")
                if proxied and with_nginx
                else "",
                _fmt(report.median(target, load, "app_cpu_us"), ".1f"),
            )


def _every_run(report: Report) -> Iterator[str]:
    yield _row(
        "run", "path", "conns x streams", "req/s", "p50 ms", "p99 ms", "requests", "errors", "CPU us/req"
    )
    yield _row(*["---"] * 9)
    for index, run in enumerate(report.runs, start=1):
        for m in run:
            yield _row(
                index, m.target, m.load, f"{m.rps:.0f}", f"{m.p50_ms:.3f}", f"{m.p99_ms:.3f}", m.requests,
                m.errors, _fmt(m.proxy_cpu_us, ".1f"),
            )  # fmt: skip


def _environment(report: Report) -> Iterator[str]:
    yield (
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()},"
        f" Python {platform.python_version()}"
    )
    start, end = (" ".join(f"{x:.2f}" for x in load) for load in (report.load_at_start, os.getloadavg()))
    yield f"- load average (1/5/15 min) at the start: {start}; at the end: {end}"
    if shutil.which("h2load") is not None:
        h2load = subprocess.run(["h2load", "--version"], capture_output=True, text=True, check=False)
        yield f"- {h2load.stdout.strip() or 'h2load'} (`-t1`, one thread)"
    compiled = (
        "compiled with mypyc (setup.py)" if report.compiled else "**pure Python** (no compiled extensions)"
    )
    yield f"- queue-proxy hot path: {compiled}"
    nginx = nginx_binary()
    if nginx is not None:
        version = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
        yield f"- {(version.stderr or version.stdout).strip()} (app and proxy: one process each, no master)"
    for name, why in report.skipped.items():
        yield f"- skipped `{name}`: {why}"


def render(report: Report, targets: list[str]) -> str:
    rss = ", ".join(f"{name} {mib:.1f} MiB" for name, mib in report.idle_rss.items())
    lines = [
        "# Data-plane benchmark over HTTP/2 (h2c): direct, our queue-proxy, nginx",
        "",
        "The app is nginx answering `hello world` over h2c only (one process); every proxy speaks h2c on",
        "both sides. Loaded with `h2load -t1` at 1 connection x 1 stream and 10 connections x 10 streams;",
        "every path is measured in each run, ratios are taken within a run, figures are medians over runs.",
        "Latency percentiles are nearest-rank over h2load's per-request log. CPU is user+system time of the",
        "proxy process (/proc/<pid>/stat) per request completed; the app's is shown too.",
        "",
        "Command:",
        "",
        "```",
        report.command,
        "```",
        "",
        *_environment(report),
        "",
        "## Summary (medians over runs)",
        "",
        *_summary(report, targets),
        "",
        f"Idle RSS (after start, before any load): {rss or 'n/a'}",
        "",
        "## Every run",
        "",
        *_every_run(report),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per h2load measurement")
    parser.add_argument("--warm-up", type=float, default=1.0, help="seconds of unrecorded load before each")
    parser.add_argument("--paths", default=DEFAULT_PATHS, help=f"comma-separated, from {sorted(PATHS)}")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.paths.split(",")]
    if "direct" not in names or any(name not in PATHS for name in names):
        parser.error(f"--paths must include direct and name only {sorted(PATHS)}")
    if shutil.which("h2load") is None:
        parser.error("h2load is not installed (Debian: apt-get install nghttp2-client)")
    command = shlex.join(
        ["python", "benchmarks/dataplane_h2.py", *(argv if argv is not None else sys.argv[1:])]
    )
    report = Report(command)
    processes = Processes()
    targets: list[Target] = []
    try:
        try:
            app_port, app_pid = start_app(processes)
        except Skipped as skipped:
            print(f"cannot start the h2c app: {skipped}", file=sys.stderr)
            return 3
        for name in names:
            try:
                targets.append(PATHS[name](processes, app_port))
            except Skipped as skipped:
                report.skipped[name] = str(skipped)
                print(f"skipping {name}: {skipped}", flush=True)
        time.sleep(2.0)
        report.idle_rss = {t.name: rss_mib(t.proxy_pid) for t in targets if t.proxy_pid}
        for run in range(args.runs):
            results = []
            for load in LOADS:
                for target in targets:
                    m = measure(target, app_pid, load, args.duration, args.warm_up)
                    results.append(m)
                    print(f"run {run + 1}: {m}", flush=True)
            report.runs.append(results)
    finally:
        processes.stop()
    text = render(report, [t.name for t in targets])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
