"""Data-plane overhead: the same hello-world app measured directly and through the queue-proxy, with `wrk`.

Each run measures every path at 1, 10 and 100 connections back to back, so ratios compare numbers taken
under the same machine conditions. A path is a function that starts its processes and returns the URL to
load plus the proxy process to account CPU to (an activator -> queue-proxy -> app chain is one more path).

The yardstick is nginx as a reverse proxy in front of the same app, measured in the same run: the
queue-proxy's latency and CPU targets are relative to it, so they carry over from machine to machine.
Knative's own queue-proxy (built from its Go module by benchmarks/knative_queue.sh) is measured beside ours.
Either row is skipped, with a note in the report, where nginx is not installed or the Go build fails.

    python benchmarks/dataplane.py --runs 3 --duration 5 --out benchmarks/results/dataplane.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shlex
import shutil
import signal
import socket
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
CONNECTIONS: Final = (1, 10, 100)
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
PAGE: Final = os.sysconf("SC_PAGE_SIZE")

# Targets for the queue-proxy path (see docs/queue-proxy.md). The latency and CPU targets are against nginx as
# a reverse proxy in front of the same app, measured in the same run (see `yardstick_checks`).
MIN_THROUGHPUT_RATIO: Final = 0.55
MAX_IDLE_RSS_MIB: Final = 45.0
MAX_CPU_VS_NGINX: Final = 1.2
"""CPU per request at 10 connections: at most this many times nginx's."""
MAX_P99_OVER_NGINX_MS: Final = 0.3
"""p99 at 10 connections: at most nginx's plus this."""
MAX_P50_ADDED_VS_NGINX: Final = 1.3
"""p50 added to the direct path at 1 connection: at most this many times what nginx adds."""

NGINX: Final = "nginx"
KNATIVE_VERSION: Final = os.environ.get("KNATIVE_VERSION", "v0.42.2")
KNATIVE_BUILD: Final = ROOT / "benchmarks" / "knative_queue.sh"
# Knative's queue-proxy listens on these whatever its environment says (admin, autoscaler metrics), on every
# interface; 9091 (user metrics) and 8008 (profiling) only when turned on, which the benchmark does not.
KNATIVE_FIXED_PORTS: Final = (8022, 9090)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(port: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {timeout}s")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU time of a process so far (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def rss_mib(pid: int) -> float:
    resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return resident * PAGE / (1 << 20)


class Skipped(Exception):
    """A path that cannot run on this machine (a tool missing, a port taken): the report says why."""


@dataclass
class Processes:
    """Processes started for the benchmark; all are terminated at the end, and scratch directories removed."""

    running: list[subprocess.Popen[bytes]] = field(default_factory=list)
    prefix: list[str] = field(default_factory=list)
    """Prepended to every command started from now on (cachegrind for instruction counts)."""
    stop_signals: dict[int, signal.Signals] = field(default_factory=dict)
    scratch: list[tempfile.TemporaryDirectory[str]] = field(default_factory=list)

    def start(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [*self.prefix, *argv], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.running.append(process)
        self.stop_signals[process.pid] = stop_signal
        return process

    def directory(self) -> Path:
        """A scratch directory removed at `stop`."""
        scratch = tempfile.TemporaryDirectory(prefix="dataplane-")
        self.scratch.append(scratch)
        return Path(scratch.name)

    def stop(self, timeout: float = 15.0) -> None:
        for process in self.running:
            if process.poll() is None:
                process.send_signal(self.stop_signals.get(process.pid, signal.SIGTERM))
        for process in self.running:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for scratch in self.scratch:
            scratch.cleanup()
        self.scratch.clear()


def wait_started(process: subprocess.Popen[bytes], port: int, what: str, timeout: float = 30.0) -> None:
    """Wait for `process` to listen on `port`; Skipped when it exits or does not listen in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Skipped(f"{what} exited with status {process.returncode} at start")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise Skipped(f"{what} did not listen on {port} within {timeout:g}s")


@dataclass(frozen=True)
class Target:
    """One way to reach the app: the URL to load and the proxy process whose CPU is accounted (if any)."""

    name: str
    url: str
    proxy_pid: int | None


def start_app(processes: Processes) -> int:
    port = free_port()
    processes.start([sys.executable, "-m", "tests.fakes.app", "--port", str(port), "--hello-only"])
    wait_listening(port)
    return port


def _pod_env() -> dict[str, str]:
    """The environment both queue-proxies (ours and Knative's) get for the benchmark's one pod."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SERVING_", "QUEUE_"))},
        "SERVING_NAMESPACE": "bench",
        "SERVING_CONFIGURATION": "hello",
        "SERVING_REVISION": "hello-00001",
        "SERVING_POD": "hello-00001-bench",
        "SERVING_POD_IP": "127.0.0.1",
    }


def queue_proxy_env(
    user_port: int, container_concurrency: int, protocol: str = "http1"
) -> tuple[dict[str, str], int]:
    """Our queue-proxy's environment as a platform writes it (`protocol`: what the app speaks)."""
    port = free_port()
    env = {
        **_pod_env(),
        "USER_PORT": str(user_port),
        "SERVING_USER_PROTOCOL": protocol,
        "CONTAINER_CONCURRENCY": str(container_concurrency),
        "QUEUE_BIND_ADDRESS": "127.0.0.1",
        "QUEUE_SERVING_PORT": str(port),
        "QUEUE_ADMIN_PORT": str(free_port()),
        "QUEUE_STATS_PORT": str(free_port()),
        "QUEUE_METRICS_PORT": str(free_port()),
        "DRAIN_QUIET_PERIOD": "0s",
    }
    return env, port


def path_direct(processes: Processes, app_port: int) -> Target:
    return Target("direct", f"http://127.0.0.1:{app_port}/", None)


def path_queue_proxy(
    processes: Processes, app_port: int, container_concurrency: int, protocol: str = "http1"
) -> Target:
    env, port = queue_proxy_env(app_port, container_concurrency, protocol)
    process = processes.start([sys.executable, "-m", "controller.cli", "queue-proxy"], env=env)
    wait_listening(port)
    return Target(f"queue-proxy CC={container_concurrency}", f"http://127.0.0.1:{port}/", process.pid)


@dataclass(frozen=True)
class Baseline:
    """Another checkout of this project (an earlier commit), whose queue-proxy runs beside this one's in the
    same runs: a change measured against what it changes, under the same conditions."""

    checkout: Path
    python: str
    """The interpreter it is installed for (`pip install -e` there builds its compiled hot path in place)."""

    @property
    def label(self) -> str:
        found = subprocess.run(
            ["git", "-C", str(self.checkout), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
        return found.stdout.strip() if found.returncode == 0 else self.checkout.name

    def path(self, container_concurrency: int) -> PathFactory:
        def start(processes: Processes, app_port: int) -> Target:
            env, port = queue_proxy_env(app_port, container_concurrency, "http1")
            # Its own modules first, whatever the working directory (this checkout) holds.
            code = (
                f"import runpy, sys; sys.path.insert(0, {str(self.checkout)!r}); "
                "sys.argv = ['serving', 'queue-proxy']; "
                "runpy.run_module('controller.cli', run_name='__main__')"
            )
            process = processes.start([self.python, "-c", code], env=env)
            wait_listening(port)
            name = f"queue-proxy CC={container_concurrency} at {self.label}"
            return Target(name, f"http://127.0.0.1:{port}/", process.pid)

        return start

    def router_path(self) -> PathFactory:
        """Its ingress router in front of the app, as `path_router` runs this checkout's, in the handler task
        only (a checkout from before the router's fast path has none)."""

        def start(processes: Processes, app_port: int) -> Target:
            port = free_port()
            forwarder = ROOT / "benchmarks" / "engine_forwarder.py"
            argv = ["engine_forwarder", "--role", "router-task", "--port", str(port)]
            code = (
                f"import runpy, sys; sys.path.insert(0, {str(self.checkout)!r}); "
                f"sys.argv = {[*argv, '--upstream-port', str(app_port)]!r}; "
                f"runpy.run_path({str(forwarder)!r}, run_name='__main__')"
            )
            process = processes.start([self.python, "-c", code])
            wait_listening(port)
            return Target(f"{ROUTER_TASK} at {self.label}", f"http://127.0.0.1:{port}/", process.pid)

        return start


def _forwarder(processes: Processes, app_port: int, role: str, name: str) -> Target:
    """One of benchmarks/engine_forwarder.py's forwarders in front of the app."""
    port = free_port()
    argv = ["benchmarks/engine_forwarder.py", "--role", role, "--port", str(port), "--upstream-port"]
    process = processes.start([sys.executable, *argv, str(app_port)])
    wait_listening(port)
    return Target(name, f"http://127.0.0.1:{port}/", process.pid)


def path_engine(processes: Processes, app_port: int) -> Target:
    """Reference point: the bare forwarding engine (no probes, breaker, stats, timeouts or header rules)."""
    return _forwarder(processes, app_port, "forwarder", "bare engine")


def path_minimal(processes: Processes, app_port: int) -> Target:
    """Calibration floor: the least a Python forwarder on uvloop does per request (not a product)."""
    return _forwarder(processes, app_port, "minimal", MINIMAL)


def path_minimal_task(processes: Processes, app_port: int) -> Target:
    """Calibration: the minimal forwarder with one task per connection woken twice per request, as the
    engine's handler task is (not a product; not in the default paths)."""
    return _forwarder(processes, app_port, "minimal-task", MINIMAL_TASK)


def path_router(processes: Processes, app_port: int) -> Target:
    """The ingress router (what `serving up` runs) with one revision in Serve mode whose pod is the app: the
    router's own cost, with no queue-proxy behind it."""
    return _forwarder(processes, app_port, "router", ROUTER)


def path_router_task(processes: Processes, app_port: int) -> Target:
    """The same router without its fast path: every request in the engine's handler task (not in the
    default paths)."""
    return _forwarder(processes, app_port, "router-task", ROUTER_TASK)


NGINX_CONF: Final = """\
daemon off;
master_process off;
worker_processes 1;
pid {scratch}/nginx.pid;
error_log {scratch}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {scratch}/client_body;
    proxy_temp_path {scratch}/proxy;
    fastcgi_temp_path {scratch}/fastcgi;
    uwsgi_temp_path {scratch}/uwsgi;
    scgi_temp_path {scratch}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    upstream app {{
        server 127.0.0.1:{app_port};
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
"""One process (no master) that serves the port itself, so its CPU is all the proxy's and compares with our
single-process queue-proxy. Connections to the app are kept alive and never retired after N requests
(nginx's default closes both sides every 1000), as our queue-proxy keeps its own."""


def nginx_binary() -> str | None:
    """nginx on PATH, else where Debian puts it (/usr/sbin is not on every user's PATH)."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def path_nginx(processes: Processes, app_port: int) -> Target:
    """The yardstick: nginx as a reverse proxy in front of the same app."""
    nginx = nginx_binary()
    if nginx is None:
        raise Skipped("nginx is not installed (Debian: apt-get install nginx-light)")
    scratch = processes.directory()
    port = free_port()
    conf = scratch / "nginx.conf"
    conf.write_text(NGINX_CONF.format(scratch=scratch, app_port=app_port, port=port))
    process = processes.start([nginx, "-p", str(scratch), "-e", str(scratch / "error.log"), "-c", str(conf)])
    wait_started(process, port, "nginx")
    return Target(NGINX, f"http://127.0.0.1:{port}/", process.pid)


def knative_queue_cached() -> Path | None:
    """Knative's queue-proxy binary if benchmarks/knative_queue.sh has built it already (same cache)."""
    cache = Path(
        os.environ.get("SERVING_KNATIVE_CACHE", Path.home() / ".cache" / "serving" / "knative-queue")
    )
    binary = cache / KNATIVE_VERSION / "queue"
    return binary if os.access(binary, os.X_OK) else None


def knative_queue_binary() -> Path:
    """Knative's queue-proxy binary, built by benchmarks/knative_queue.sh once per version (cached outside
    the checkout); Skipped when it cannot be built here."""
    if not KNATIVE_BUILD.exists():
        raise Skipped(f"{KNATIVE_BUILD.relative_to(ROOT)} is missing")
    started = time.monotonic()
    try:
        built = subprocess.run(
            ["bash", str(KNATIVE_BUILD)],
            env={**os.environ, "KNATIVE_VERSION": KNATIVE_VERSION},
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise Skipped("building Knative's queue-proxy took more than 30 minutes") from None
    lines = built.stdout.strip().splitlines()
    if built.returncode != 0 or not lines or not os.access(lines[-1], os.X_OK):
        # The line that says what failed (a download refused, a compile error), else the last one.
        lines = [line.strip() for line in built.stderr.splitlines() if line.strip()] or ["no output"]
        telling = [line for line in lines if re.search(r"reading https|error|cannot|[0-9]{3} [A-Z]", line)]
        last = (telling or lines)[-1][-300:]
        raise Skipped(f"Knative's queue-proxy {KNATIVE_VERSION} could not be built here: {last}")
    if time.monotonic() - started > 5:
        print(f"built Knative's queue-proxy in {time.monotonic() - started:.0f}s: {lines[-1]}", flush=True)
    return Path(lines[-1])


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return True
        return False


def knative_queue_env(user_port: int, container_concurrency: int) -> tuple[dict[str, str], int]:
    """What Knative's queue-proxy requires (knative.dev/serving pkg/queue/sharedmain: `config`'s required
    fields), request logs, request metrics, tracing and profiling off as by default."""
    port = free_port()
    env = {
        **_pod_env(),
        "QUEUE_SERVING_PORT": str(port),
        "QUEUE_SERVING_TLS_PORT": str(free_port()),  # only with certificates in /var/lib/knative/certs
        "USER_PORT": str(user_port),
        "CONTAINER_CONCURRENCY": str(container_concurrency),
        "REVISION_TIMEOUT_SECONDS": "300",
        "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": "error",
        "SERVING_REQUEST_LOG_TEMPLATE": "",
        "SERVING_ENABLE_REQUEST_LOG": "false",
        "SERVING_REQUEST_METRICS_BACKEND": "",
        "TRACING_CONFIG_BACKEND": "none",
        "ENABLE_PROFILING": "false",
    }
    return env, port


def path_knative(processes: Processes, app_port: int, container_concurrency: int) -> Target:
    """Knative's own queue-proxy (the Go binary we replace) in front of the same app."""
    binary = knative_queue_binary()
    taken = [port for port in KNATIVE_FIXED_PORTS if port_taken(port)]
    if taken:
        raise Skipped(f"Knative's queue-proxy needs ports {KNATIVE_FIXED_PORTS}; taken here: {taken}")
    env, port = knative_queue_env(app_port, container_concurrency)
    # SIGTERM would start its drain (a fixed 30 s of quiet); the benchmark is done with it by then.
    process = processes.start([str(binary)], env=env, stop_signal=signal.SIGKILL)
    wait_started(process, port, "Knative's queue-proxy")
    name = f"knative queue-proxy {KNATIVE_VERSION} CC={container_concurrency}"
    return Target(name, f"http://127.0.0.1:{port}/", process.pid)


MINIMAL: Final = "minimal forwarder"
MINIMAL_TASK: Final = "minimal forwarder, task per connection"
ROUTER: Final = "router (Serve mode)"
ROUTER_TASK: Final = "router (Serve mode), handler task only"
PathFactory = Callable[[Processes, int], Target]
PATHS: Final[dict[str, PathFactory]] = {
    "direct": path_direct,
    "minimal": path_minimal,
    "minimal-task": path_minimal_task,
    "engine": path_engine,
    "router": path_router,
    "router-task": path_router_task,
    "nginx": path_nginx,
    # One Knative queue-proxy at a time: its admin and metrics ports are fixed, so a CC=100 instance could
    # not run beside it.
    "knative-cc0": lambda processes, port: path_knative(processes, port, 0),
    "qp-cc0": lambda processes, port: path_queue_proxy(processes, port, 0),
    "qp-cc100": lambda processes, port: path_queue_proxy(processes, port, 100),
}
UNCOUNTED: Final = frozenset({"nginx", "knative-cc0"})
"""Paths whose instructions are not counted under cachegrind."""
DEFAULT_PATHS: Final = "direct,minimal,engine,router,nginx,knative-cc0,qp-cc0,qp-cc100"


@dataclass(frozen=True)
class Measurement:
    target: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    proxy_cpu_us: float | None
    """Proxy CPU microseconds per request (user + system), None for the direct path."""
    proxy_sys_us: float | None = None
    """The kernel's share of `proxy_cpu_us` (socket calls, wake-ups)."""


_UNITS: Final = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


BROWSER_HEADERS: Final = (
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language: en-US,en;q=0.9",
    "Accept-Encoding: gzip, deflate, br",
    "Cookie: session=abcdef0123456789; theme=dark",
    "Referer: http://example.com/start",
    "Cache-Control: no-cache",
    "X-Request-Id: 3f2a9c1e-8b7d-4e6f-a5c4-1b2d3e4f5a6b",
)
"""Eight fields a browser sends (about 400 bytes of head), for `--browser-headers`: wrk alone sends Host."""


def run_wrk(
    url: str, connections: int, duration: float, headers: tuple[str, ...] = ()
) -> tuple[float, float, float, int, int]:
    """(requests/s, p50 ms, p99 ms, requests, errors) from one wrk run with one thread; `headers` are added to
    every request."""
    extra = [arg for field in headers for arg in ("-H", field)]
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", *extra, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]  # wrk output
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]  # same
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]  # same
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]  # same
    errors_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(errors_match.group(1)) if errors_match else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return rps, p50, p99, requests, errors


def measure(target: Target, connections: int, duration: float, headers: tuple[str, ...] = ()) -> Measurement:
    run_wrk(target.url, connections, 1.0, headers)  # warm up connections and pools
    before = cpu_seconds(target.proxy_pid) if target.proxy_pid else (0.0, 0.0)
    rps, p50, p99, requests, errors = run_wrk(target.url, connections, duration, headers)
    cpu_us = sys_us = None
    if target.proxy_pid:
        user, system = cpu_seconds(target.proxy_pid)
        per_request = 1e6 / max(requests, 1)
        cpu_us = (user - before[0] + system - before[1]) * per_request
        sys_us = (system - before[1]) * per_request
    return Measurement(target.name, connections, rps, p50, p99, requests, errors, cpu_us, sys_us)


def counted_instructions(
    path: PathFactory, app_port: int, load_seconds: float, headers: tuple[str, ...] = ()
) -> tuple[int, int]:
    """(user-space instructions, requests served) of one proxy process run under cachegrind.

    Instruction counts do not depend on what else the machine runs, unlike CPU time; the kernel's share
    (socket calls) is not included.
    """
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "cachegrind.out"
        processes = Processes(
            prefix=["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}"]
        )
        requests = 0
        try:
            target = path(processes, app_port)
            time.sleep(1.0)
            if load_seconds:
                requests = run_wrk(target.url, 10, load_seconds, headers)[3]
        finally:
            processes.stop(timeout=120)
        summary = re.search(r"^summary:\s+(\d+)", out.read_text(), re.M)
        if summary is None:
            raise RuntimeError("cachegrind wrote no summary")
        return int(summary.group(1)), requests


def instructions_per_request(
    path: PathFactory, app_port: int, load_seconds: float, headers: tuple[str, ...] = ()
) -> float:
    """The slope between an idle run and a loaded run, so start-up and idle timers cancel out."""
    idle, _ = counted_instructions(path, app_port, 0.0)
    loaded, requests = counted_instructions(path, app_port, load_seconds, headers)
    return (loaded - idle) / max(requests, 1)


def hot_path_compiled(root: Path = ROOT) -> bool:
    """Whether the engine's extension modules are beside its sources (`pip install -e .` with a C compiler):
    without them the queue-proxy runs as pure Python, slower."""
    return any((root / "serving" / "http").glob("connection.*.so"))


@dataclass
class Report:
    command: str
    runs: list[list[Measurement]] = field(default_factory=list)
    idle_rss: dict[str, float] = field(default_factory=dict)
    load_at_start: tuple[float, ...] = field(default_factory=os.getloadavg)
    instructions: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    """Paths (by --paths name) that could not run here, and why."""
    compiled: bool = field(default_factory=hot_path_compiled)
    """Whether the queue-proxy ran its mypyc-compiled hot path (setup.py) or pure Python."""
    baseline: Baseline | None = None
    headers: tuple[str, ...] = ()
    """Fields added to every request (`--browser-headers`)."""

    def has(self, target: str) -> bool:
        """Whether `target` was measured."""
        return any(m.target == target for run in self.runs for m in run)

    def _values(self, target: str, connections: int, attr: str) -> list[float]:
        return [
            float(getattr(m, attr))
            for run in self.runs
            for m in run
            if (m.target, m.connections) == (target, connections)
        ]

    def median(self, target: str, connections: int, attr: str) -> float:
        return statistics.median(self._values(target, connections, attr))

    def _paired(self, target: str, connections: int, attr: str) -> list[tuple[float, float]]:
        """(proxied, direct) values of `attr`, paired within each run."""
        return list(
            zip(
                self._values(target, connections, attr),
                self._values("direct", connections, attr),
                strict=True,
            )
        )

    def ratio(self, target: str, connections: int) -> float:
        """Median over runs of proxied / direct requests per second, each ratio taken within one run."""
        return statistics.median(p / d for p, d in self._paired(target, connections, "rps"))

    def relative(self, target: str, reference: str, connections: int, attr: str) -> float:
        """Median over runs of `target`'s `attr` divided by `reference`'s, each ratio taken within one run:
        the machine's speed drifts more between runs than between two paths measured seconds apart in one."""
        pairs = zip(
            self._values(target, connections, attr), self._values(reference, connections, attr), strict=True
        )
        return statistics.median(value / base for value, base in pairs if base > 0)

    def added_ms(self, target: str, connections: int, attr: str) -> float:
        """Median over runs of the latency the proxy adds, each difference taken within one run."""
        return statistics.median(p - d for p, d in self._paired(target, connections, attr))


def _environment(report: Report) -> Iterator[str]:
    yield (
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()},"
        f" Python {platform.python_version()}"
    )
    start, end = (" ".join(f"{x:.2f}" for x in load) for load in (report.load_at_start, os.getloadavg()))
    yield f"- load average (1/5/15 min) at the start: {start}; at the end: {end}"
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    yield f"- {(wrk.stdout or wrk.stderr).splitlines()[0].strip()}"
    if report.headers:
        names = ", ".join(field.split(":", 1)[0] for field in report.headers)
        yield f"- requests: wrk's Host and {len(report.headers)} fields of a browser's ({names})"
    else:
        yield "- requests: wrk's own, `GET /` with Host only"
    yield (
        "- hot path (engine, queue-proxy, router): "
        + (
            "compiled with mypyc (setup.py)"
            if report.compiled
            else "**pure Python** (no compiled extensions)"
        )
    )
    nginx = nginx_binary()
    if report.has(NGINX) and nginx is not None:
        version = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
        yield f"- {(version.stderr or version.stdout).strip()} (one process, `worker_processes 1`, no master)"
    if any(m.target.startswith("knative") for run in report.runs for m in run):
        yield (
            f"- Knative's queue-proxy: `knative.dev/serving/cmd/queue` {KNATIVE_VERSION}, built with"
            f" {_go_version()} by benchmarks/knative_queue.sh"
        )
    if report.baseline is not None:
        base = report.baseline
        compiled = "compiled" if hot_path_compiled(base.checkout) else "**pure Python**"
        yield (
            f"- baseline (rows `at {base.label}`): the queue-proxy and router of {base.checkout}"
            f" ({compiled}), run by {base.python}"
        )
    for name, why in report.skipped.items():
        yield f"- skipped `{name}`: {why}"


def _go_version() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    with contextlib.suppress(OSError):
        out = subprocess.run([go, "version"], capture_output=True, text=True, check=False).stdout.split()
        if len(out) >= 3:
            return out[2]
    return "Go"


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _optional(report: Report, target: str, connections: int, attr: str) -> str:
    """The median of a figure not every measurement has (empty when none has it)."""
    values = [
        float(getattr(m, attr))
        for run in report.runs
        for m in run
        if (m.target, m.connections) == (target, connections) and getattr(m, attr) is not None
    ]
    return f"{statistics.median(values):.1f}" if values else ""


def _summary(report: Report, proxies: list[str]) -> Iterator[str]:
    yield _row(
        "path",
        "conns",
        "req/s",
        "vs direct",
        "p50 ms",
        "p50 added us",
        "p99 ms",
        "p99 added ms",
        "CPU us/req",
        "of which kernel",
    )
    yield _row(*["---"] * 10)
    for connections in CONNECTIONS:
        for target in ["direct", *proxies]:
            rps = report.median(target, connections, "rps")
            p50 = report.median(target, connections, "p50_ms")
            p99 = report.median(target, connections, "p99_ms")
            if target == "direct":
                yield _row(target, connections, f"{rps:.0f}", "1", f"{p50:.3f}", "", f"{p99:.3f}", "", "", "")
                continue
            yield _row(
                target,
                connections,
                f"{rps:.0f}",
                f"{report.ratio(target, connections):.2f}",
                f"{p50:.3f}",
                f"{report.added_ms(target, connections, 'p50_ms') * 1000:.0f}",
                f"{p99:.3f}",
                f"{report.added_ms(target, connections, 'p99_ms'):.3f}",
                f"{report.median(target, connections, 'proxy_cpu_us'):.1f}",
                _optional(report, target, connections, "proxy_sys_us"),
            )


@dataclass(frozen=True)
class Check:
    """One target: `value` against `bound` (None when what it needs was not measured, `note` says why)."""

    target: str
    name: str
    value: float | None
    bound: float | None
    at_least: bool = False
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None or self.bound is None:
            return None
        return self.value >= self.bound if self.at_least else self.value <= self.bound


def yardstick_checks(report: Report, target: str) -> list[Check]:
    """The targets relative to nginx in the same run: CPU per request and p99 at 10 connections, p50 added to
    the direct path at 1 connection. CPU: the median over runs of the ratio to nginx's in the same run; the
    others: each side a median over runs (added latency: of the within-run difference from the direct
    path)."""
    cpu = f"proxy CPU/req @10 <= {MAX_CPU_VS_NGINX:g} x nginx's{{}}, ratio run by run"
    p99 = f"p99 @10 <= nginx's{{}} + {MAX_P99_OVER_NGINX_MS:g} ms"
    p50 = f"p50 added @1 <= {MAX_P50_ADDED_VS_NGINX:g} x nginx's{{}}"
    if not report.has(NGINX):
        why = report.skipped.get("nginx", "nginx was not among --paths")
        return [Check(target, name.format(""), None, None, note=why) for name in (cpu, p99, p50)]
    nginx_cpu = report.median(NGINX, 10, "proxy_cpu_us")
    nginx_p99 = report.median(NGINX, 10, "p99_ms")
    nginx_added = max(report.added_ms(NGINX, 1, "p50_ms") * 1000, 1.0)  # noise can put it at or below 0
    return [
        Check(
            target,
            cpu.format(f" (median {nginx_cpu:.1f} us)"),
            report.relative(target, NGINX, 10, "proxy_cpu_us"),
            MAX_CPU_VS_NGINX,
        ),
        Check(
            target,
            p99.format(f" ({nginx_p99:.3f} ms)"),
            report.median(target, 10, "p99_ms"),
            nginx_p99 + MAX_P99_OVER_NGINX_MS,
        ),
        Check(
            target,
            p50.format(f" ({nginx_added:.0f} us)"),
            report.added_ms(target, 1, "p50_ms") * 1000,
            MAX_P50_ADDED_VS_NGINX * nginx_added,
        ),
    ]


def checks(report: Report, target: str) -> list[Check]:
    """Every target of one queue-proxy path: throughput against direct, the nginx yardstick, idle RSS."""
    return [
        Check(
            target,
            f"throughput >= {MIN_THROUGHPUT_RATIO:g} x direct @10",
            report.ratio(target, 10),
            MIN_THROUGHPUT_RATIO,
            at_least=True,
        ),
        Check(
            target,
            f"throughput >= {MIN_THROUGHPUT_RATIO:g} x direct @100",
            report.ratio(target, 100),
            MIN_THROUGHPUT_RATIO,
            at_least=True,
        ),
        *yardstick_checks(report, target),
        Check(target, f"idle RSS <= {MAX_IDLE_RSS_MIB:g} MiB", report.idle_rss.get(target), MAX_IDLE_RSS_MIB),
    ]


def _targets(report: Report, proxies: list[str]) -> Iterator[str]:
    yield _row("path", "target", "measured", "bound", "met")
    yield _row(*["---"] * 5)
    for target in proxies:
        if not target.startswith("queue-proxy"):
            continue  # a reference path, not the product
        for check in checks(report, target):
            if check.value is None or check.bound is None:
                yield _row(target, check.name, "", "", f"not measured: {check.note}" if check.note else "")
                continue
            met = "yes" if check.met else "**no**"
            yield _row(target, check.name, f"{check.value:.2f}", f"{check.bound:.2f}", met)


def _times(value: float, reference: float) -> str:
    return f"{value / reference:.2f}" if reference > 0 else "n/a"


def _yardstick(report: Report, proxies: list[str]) -> Iterator[str]:
    """nginx, Knative's queue-proxy and ours side by side, each relative to nginx."""
    if not report.has(NGINX):
        yield f"Not measured: {report.skipped.get('nginx', 'nginx was not among --paths')}."
        return
    yield _row(
        "path",
        "conns",
        "req/s",
        "p50 ms",
        "p50 added us",
        "p99 ms",
        "CPU us/req",
        "CPU x nginx (run by run)",
        "p99 - nginx ms",
        "p50 added x nginx",
    )
    yield _row(*["---"] * 10)
    compared = [t for t in proxies if t == NGINX or t.startswith(("queue-proxy", "knative"))]
    for connections in CONNECTIONS:
        nginx_p99 = report.median(NGINX, connections, "p99_ms")
        nginx_added = report.added_ms(NGINX, connections, "p50_ms") * 1000
        for target in compared:
            cpu = report.median(target, connections, "proxy_cpu_us")
            p99 = report.median(target, connections, "p99_ms")
            added = report.added_ms(target, connections, "p50_ms") * 1000
            yield _row(
                target,
                connections,
                f"{report.median(target, connections, 'rps'):.0f}",
                f"{report.median(target, connections, 'p50_ms'):.3f}",
                f"{added:.0f}",
                f"{p99:.3f}",
                f"{cpu:.1f}",
                f"{report.relative(target, NGINX, connections, 'proxy_cpu_us'):.2f}",
                f"{p99 - nginx_p99:+.3f}",
                _times(added, nginx_added),
            )


def _every_run(report: Report) -> Iterator[str]:
    yield _row("run", "path", "conns", "req/s", "p50 ms", "p99 ms", "errors", "CPU us/req")
    yield _row(*["---"] * 8)
    for index, run in enumerate(report.runs, start=1):
        for m in run:
            cpu = "" if m.proxy_cpu_us is None else f"{m.proxy_cpu_us:.1f}"
            yield _row(
                index,
                m.target,
                m.connections,
                f"{m.rps:.0f}",
                f"{m.p50_ms:.3f}",
                f"{m.p99_ms:.3f}",
                m.errors,
                cpu,
            )


def _instructions(report: Report) -> Iterator[str]:
    if not report.instructions:
        return
    yield "## User-space instructions per request (cachegrind, 10 connections)"
    yield ""
    yield "Independent of machine load: (instructions after a wrk run - those of an idle run) / requests."
    yield ""
    yield _row("path", "instructions/request")
    yield _row("---", "---")
    for name, count in report.instructions.items():
        yield _row(name, f"{count:,.0f}")
    yield ""


def render(report: Report, proxies: list[str]) -> str:
    rss = ", ".join(f"{name} {mib:.1f} MiB" for name, mib in report.idle_rss.items())
    lines = [
        "# Data-plane benchmark: direct vs through the queue-proxy",
        "",
        "The same aiohttp + uvloop hello-world app (`tests/fakes/app.py --hello-only`, its own process),",
        "loaded with `wrk -t1 --latency` at 1, 10 and 100 connections. Every path is measured in each run,",
        "so ratios and added latencies compare numbers taken under the same conditions; medians over runs.",
        "CPU is the proxy process's user+system time (/proc/<pid>/stat) per request wrk completed.",
        "The yardstick is nginx as a reverse proxy in front of the same app (one process, keep-alive",
        "HTTP/1.1 to the app), measured in the same runs: the latency and CPU targets are relative to it.",
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
        *_summary(report, proxies),
        "",
        "## Yardstick: against nginx in the same runs",
        "",
        *_yardstick(report, proxies),
        "",
        "## Targets",
        "",
        *_targets(report, proxies),
        "",
        f"Idle RSS (after start, before any load): {rss}",
        "",
        *_instructions(report),
        "## Every run",
        "",
        *_every_run(report),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk measurement")
    parser.add_argument(
        "--paths",
        default=DEFAULT_PATHS,
        help=f"comma-separated, from {sorted(PATHS)} (nginx and knative-cc0 are skipped where unavailable)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    parser.add_argument(
        "--browser-headers",
        action="store_true",
        help="every request carries the eight fields of BROWSER_HEADERS, not wrk's Host alone",
    )
    parser.add_argument(
        "--instructions",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also count each proxy's instructions per request under cachegrind (needs valgrind)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="CHECKOUT",
        help="also run the queue-proxy of another checkout (e.g. `git worktree add /tmp/base HEAD~1`, "
        "installed with `pip install -e` for --baseline-python) beside each queue-proxy path, same runs",
    )
    parser.add_argument(
        "--baseline-python",
        default=sys.executable,
        help="the interpreter the baseline checkout is installed for",
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.paths.split(",")]
    if "direct" not in names or any(name not in PATHS for name in names):
        parser.error(f"--paths must include direct and name only {sorted(PATHS)}")
    command = shlex.join(["python", "benchmarks/dataplane.py", *(argv if argv is not None else sys.argv[1:])])
    report = Report(command, headers=BROWSER_HEADERS if args.browser_headers else ())
    paths = dict(PATHS)
    if args.baseline is not None:
        if not (args.baseline / "controller" / "cli" / "__main__.py").is_file():
            parser.error(f"--baseline {args.baseline}: not a checkout of this project (no controller/cli)")
        baseline = report.baseline = Baseline(args.baseline.resolve(), args.baseline_python)
        for name in [n for n in names if n.startswith("qp-cc")]:
            paths[f"{name}-baseline"] = baseline.path(int(name.removeprefix("qp-cc")))
            names.insert(names.index(name), f"{name}-baseline")
        for name in [n for n in names if n.startswith("router")][:1]:
            paths["router-baseline"] = baseline.router_path()
            names.insert(names.index(name), "router-baseline")
    processes = Processes()
    try:
        app_port = start_app(processes)
        started: list[tuple[str, Target]] = []
        for name in names:
            try:
                started.append((name, paths[name](processes, app_port)))
            except Skipped as skipped:
                report.skipped[name] = str(skipped)
                print(f"skipping {name}: {skipped}", flush=True)
        targets = [target for _, target in started]
        time.sleep(2.0)
        for target in targets:
            if target.proxy_pid:
                report.idle_rss[target.name] = rss_mib(target.proxy_pid)
        for run in range(args.runs):
            results = []
            for connections in CONNECTIONS:
                for target in targets:
                    m = measure(target, connections, args.duration, report.headers)
                    results.append(m)
                    print(f"run {run + 1}: {m}", flush=True)
            report.runs.append(results)
        if args.instructions:
            for name, target in started:
                # Python proxies only: nginx and Knative's queue-proxy are references for time and CPU, and
                # Knative's binds fixed ports a second instance under cachegrind could not take.
                if target.proxy_pid and name not in UNCOUNTED:
                    count = instructions_per_request(paths[name], app_port, args.instructions, report.headers)
                    report.instructions[target.name] = count
                    print(f"{target.name}: {count:,.0f} instructions/request", flush=True)
    finally:
        processes.stop()
    text = render(report, [t.name for t in targets if t.proxy_pid])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
