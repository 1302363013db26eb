"""Eventing throughput: events/s through Broker -> Trigger -> Service under `serving up`, `wrk` producing.

Each run starts `serving up` (a temporary folder, a free port) with one Broker, one Trigger without a filter
and a warm sink Service (min-scale 1, benchmarks/eventing_sink.py), and loads the Broker's ingress with 1, 10
and 100 concurrent producers posting binary-mode CloudEvents (~200 B of data) over keep-alive connections.
A baseline row posts the same requests straight to the sink Service through the router in the same
`serving up`, so that the cost of eventing is a ratio taken within a run. The Kafka Broker class gets its
own `serving up` in each run, against one real single-node Kafka (tests/kafka/broker.py).

Per measurement: events accepted (202) and delivered (the sink's count) per second, delivery latency (sink
receipt minus the producer's `sentat` extension), and the CPU of every process per event (/proc/<pid>/stat).

    python benchmarks/eventing.py --runs 3 --duration 10 --out benchmarks/results/eventing.md
    python benchmarks/eventing.py --quick --out /tmp/eventing.md     # one short run, embedded Broker only
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

ROOT: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.dataplane import cpu_seconds, free_port, hot_path_compiled  # noqa: E402  # after the path set-up

PRODUCERS: Final = (1, 10, 100)
SINK: Final = ROOT / "benchmarks" / "eventing_sink.py"
UP: Final = (sys.executable, "-m", "controller.cli", "up")
TARGET_EVENTS_PER_S: Final = 5000.0
"""Events/s the embedded Broker should accept and deliver on this machine (both)."""
DATA_BYTES: Final = 200
"""Size of each event's data: a small JSON document, as most CloudEvents are."""
BASELINE: Final = "baseline"
EMBEDDED: Final = "embedded"
EMBEDDED_DIRECT: Final = "embedded-direct"
"""The embedded Broker with producers inside the platform: they post to its address there (`K_SINK`'s,
the eventing component's port), as Knative's in-cluster producers post to broker-ingress, not through the
router."""
KAFKA: Final = "kafka"
START_TIMEOUT: Final = 90.0
"""Seconds for `serving up` to start and its sink, Broker and Trigger to be ready."""
STOP_TIMEOUT: Final = 30.0
"""Seconds between SIGINT to `serving up` and SIGKILL."""
DRAIN_TIMEOUT: Final = 120.0
"""Seconds to wait after a measurement for the Broker's backlog to be delivered before the next one."""
HTTP_TIMEOUT: Final = 5.0
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")

# No proxy from the environment: every request of the benchmark goes to 127.0.0.1.
_HTTP: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str, host: str | None = None) -> Any:
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"refusing a target that is not 127.0.0.1: {url}")
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    with _HTTP.open(request, timeout=HTTP_TIMEOUT) as response:
        return json.loads(response.read())


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if check():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)


# --- the system under test ----------------------------------------------------------------------------------


def service_yaml() -> str:
    """The sink: one warm pod (min- and max-scale 1: one process to account) that the router reaches
    directly, not through the activator (target-burst-capacity 0), as a warm Service is served."""
    return f"""\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: sink
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: "1"
        autoscaling.knative.dev/max-scale: "1"
        autoscaling.knative.dev/target-burst-capacity: "0"
    spec:
      containers:
        - command: ["{sys.executable}", "{SINK}"]
"""


def broker_yaml(name: str, kafka_bootstrap: str | None, partitions: int) -> str:
    """A Broker `name` (the Kafka class when `kafka_bootstrap` is given) and its Trigger to the sink."""
    kafka = ""
    if kafka_bootstrap is not None:
        kafka = f"""\
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: kafka-broker-config
data:
  bootstrap.servers: "{kafka_bootstrap}"
  default.topic.partitions: "{partitions}"
  default.topic.replication.factor: "1"
"""
    annotations = "\n  annotations:\n    eventing.knative.dev/broker.class: Kafka" if kafka_bootstrap else ""
    config = (
        "\nspec:\n  config:\n    apiVersion: v1\n    kind: ConfigMap\n    name: kafka-broker-config"
        if kafka_bootstrap
        else ""
    )
    return f"""{kafka}\
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: {name}{annotations}{config}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: all
spec:
  broker: {name}
  subscriber:
    ref:
      apiVersion: serving.knative.dev/v1
      kind: Service
      name: sink
"""


@dataclass
class System:
    """One `serving up` with the sink Service and one Broker with its Trigger."""

    folder: Path
    broker: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    control_url: str = ""
    admin_url: str = ""

    @property
    def ingress(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def host(self, name: str) -> str:
        return f"{name}:{self.port}"

    def start(self, yaml: str) -> None:
        (self.folder / "eventing.yaml").write_text(yaml)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with (self.folder / "serving-up.out").open("wb") as out:
            self.process = subprocess.Popen(
                [*UP, "eventing.yaml", "--port", str(self.port), "--no-live"],
                cwd=self.folder,
                env={**env, "PYTHONPATH": str(ROOT)},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(self._started, START_TIMEOUT, "serving up started")
            wait_for(self._ready, START_TIMEOUT, "the sink, the Broker and the Trigger are ready")
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n{self.output_tail()}") from None

    def _started(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"serving up exited with {self.process.returncode}:\n{self.output_tail()}")
        state = self.folder / ".serving" / "up.json"
        self.control_url = json.loads(state.read_text())["control_url"]
        return bool(self.control_url)

    def _ready(self) -> bool:
        status = self.status()
        ready_url = status["components"]["eventing"]["ready_url"]
        self.admin_url = ready_url.rsplit("/", 1)[0]
        rev = status["services"][0]["revisions"][0]
        counts = self.counts()
        trigger = counts["triggers"][0] if counts["triggers"] else None
        sink = get_json(f"{self.ingress}/stats", self.host("sink.default.localhost"))
        serving = rev["ready_pods"] >= 1 and rev["mode"] == "Serve"  # the router sends to the pod itself
        return bool(serving and trigger and trigger["subscriber"] and "count" in sink)

    def status(self) -> Any:
        return get_json(f"{self.control_url}/status")

    def counts(self) -> Any:
        """The eventing component's own counts: accepted per Broker, delivered per Trigger."""
        return get_json(f"{self.admin_url}/status")

    def accepted_delivered(self) -> tuple[int, int]:
        counts = self.counts()
        return int(counts["brokers"][0]["accepted"]), int(counts["triggers"][0]["delivered"])

    def sink_stats(self, *, reset: bool) -> dict[str, Any]:
        query = "?reset=1" if reset else ""
        stats: dict[str, Any] = get_json(f"{self.ingress}/stats{query}", self.host("sink.default.localhost"))
        return stats

    def pids(self) -> dict[str, int]:
        """Every process of this `serving up` by role (router, eventing, queue-proxy, sink, ...)."""
        assert self.process is not None
        eventing = int(self.status()["components"]["eventing"]["pid"])
        return process_roles(self.process.pid, eventing)

    def output_tail(self, lines: int = 40) -> str:
        out = self.folder / "serving-up.out"
        text = out.read_text(errors="replace") if out.exists() else ""
        logs = self.folder / ".serving" / "logs" / "eventing.log"
        if logs.exists():
            text += "\n--- eventing.log\n" + logs.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_roles(up_pid: int, eventing_pid: int) -> dict[str, int]:
    """`serving up`'s process tree by role: the fork server's own children are the queue-proxies (it forks
    them from a preloaded interpreter), the app is found by its script."""
    children = _children()
    roles = {"router": up_pid}
    queue = [(up_pid, child) for child in children.get(up_pid, [])]
    while queue:
        parent, pid = queue.pop()
        queue += [(pid, child) for child in children.get(pid, [])]
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        line = b" ".join(argv).decode(errors="replace")
        if pid == eventing_pid:
            role = "eventing"
        elif SINK.name in line:
            role = "sink"
        elif "forkhost" in line:
            role = "forkhost" if parent == up_pid else "queue-proxy"
        elif "controller.cli" in line:
            role = line.split("controller.cli", 1)[1].split()[0]
        else:
            role = f"other {Path(argv[0].decode(errors='replace')).name}"
        roles[role if role not in roles else f"{role} {pid}"] = pid
    return roles


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far; zeros once it is gone."""
    with contextlib.suppress(OSError):
        return cpu_seconds(pid)
    return 0.0, 0.0


def cpu_total(pid: int) -> float:
    return sum(cpu_split(pid))


def machine_busy() -> float:
    """CPU seconds every process of the machine has used since boot (all CPUs, /proc/stat)."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


# --- the producers ------------------------------------------------------------------------------------------

WRK_SCRIPT: Final = """\
-- Binary-mode CloudEvents: a unique ce-id per request and ce-sentat, the wall clock in ns when it was built.
local ffi = require("ffi")
ffi.cdef[[
typedef struct {{ long tv_sec; long tv_nsec; }} bench_timespec_t;
int clock_gettime(int clk_id, bench_timespec_t *tp);
]]
local now = ffi.new("bench_timespec_t")
local body = '{{"data":"' .. string.rep("x", {filler}) .. '"}}'
local head = "POST {path} HTTP/1.1\\r\\nHost: {host}\\r\\nce-specversion: 1.0\\r\\nce-source: /bench\\r\\n"
  .. "ce-type: dev.bench.event\\r\\nContent-Type: application/json\\r\\nContent-Length: " .. #body .. "\\r\\n"
local counter = 0
local prefix = "e"
function init(args) prefix = args[1] or "e" end
function request()
  counter = counter + 1
  ffi.C.clock_gettime(0, now)
  local sent = string.format("%d%09d", tonumber(now.tv_sec), tonumber(now.tv_nsec))
  return head .. "ce-id: " .. prefix .. "-" .. counter .. "\\r\\nce-sentat: " .. sent .. "\\r\\n\\r\\n"
    .. body
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {{"requests": %d, "duration_us": %d, "status": %d, "socket": %d, '
    .. '"p50_us": %d, "p99_us": %d}}\\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_script(folder: Path, name: str, path: str, host: str) -> Path:
    script = folder / f"{name}.lua"
    filler = DATA_BYTES - len('{"data":""}')
    script.write_text(WRK_SCRIPT.format(path=path, host=host, filler=filler))
    return script


@dataclass(frozen=True)
class WrkResult:
    requests: int
    status_errors: int
    socket_errors: int
    p50_ms: float
    p99_ms: float


def start_wrk(url: str, script: Path, connections: int, seconds: int, prefix: str) -> subprocess.Popen[str]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url]
    return subprocess.Popen(
        [*argv, "--", prefix], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish_wrk(process: subprocess.Popen[str], timeout: float) -> WrkResult:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    line = next((line for line in out.splitlines() if line.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary:\n{out[-2000:]}")
    doc = json.loads(line[4:])
    return WrkResult(
        doc["requests"], doc["status"], doc["socket"], doc["p50_us"] / 1000, doc["p99_us"] / 1000
    )


# --- one measurement ----------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One row at one producer count in one run."""

    row: str
    producers: int
    run: int
    seconds: float
    accepted: int
    """Accepted in the window: 202s counted by the Broker (the sink's 202s for the baseline)."""
    delivered: int
    """Received by the sink in the window."""
    p50_ms: float | None
    p99_ms: float | None
    """Delivery latency (sink receipt - the producer's `sentat`) of the events the sink got in the window."""
    accept_p50_ms: float
    accept_p99_ms: float
    """The producers' response time (wrk, whole run with warm-up): a 202 from the ingress, or the sink."""
    errors: int
    cpu: dict[str, float]
    """CPU seconds in the window by role (`serving up`'s processes, Kafka, the producers)."""
    machine_cpu: float
    """CPU seconds the whole machine used in the window (every process, ours and others')."""
    kernel: dict[str, float] = field(default_factory=dict)
    """Of `cpu`, the seconds spent in the kernel (system time: sockets, writes, fsync)."""
    backlog: int = 0
    """Accepted but not yet delivered when the window closed."""
    drain_s: float | None = 0.0
    """Seconds the backlog took to be delivered after the producers stopped (None: not within the limit)."""

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.seconds

    @property
    def delivered_per_s(self) -> float:
        return self.delivered / self.seconds

    def cpu_us(self, role: str) -> float:
        """CPU microseconds of `role` per accepted event."""
        return self.cpu.get(role, 0.0) * 1e6 / max(self.accepted, 1)

    @property
    def ours_cpu(self) -> float:
        return sum(self.cpu.values())


@dataclass(frozen=True)
class Target:
    row: str
    path: str
    host: str
    url: str | None = None
    """Where the producers connect; None: the router (`serving up`'s ingress)."""


def measure(
    system: System,
    target: Target,
    producers: int,
    run: int,
    timing: tuple[int, int],
    extra_pids: dict[str, int],
) -> Sample:
    """Load `target` with `producers` for warm-up + duration seconds; the window is the duration after the
    warm-up, inside the load (wrk runs a second past it)."""
    warm_up, duration = timing
    eventing = target.row != BASELINE
    script = wrk_script(system.folder, f"{target.row}-{producers}", target.path, target.host)
    pids = system.pids()
    prefix = f"{target.row}-{producers}-{run}-{time.time_ns()}"
    started = time.monotonic()
    wrk = start_wrk(target.url or system.ingress, script, producers, warm_up + duration + 1, prefix)
    roles = {**pids, **extra_pids, "producers (wrk)": wrk.pid}
    try:
        time.sleep(max(0.0, started + warm_up - time.monotonic()))
        system.sink_stats(reset=True)
        accepted0 = system.accepted_delivered()[0] if eventing else 0
        cpu0 = {role: cpu_split(pid) for role, pid in roles.items()}
        busy0, t0 = machine_busy(), time.monotonic()
        time.sleep(duration)
        busy1, t1 = machine_busy(), time.monotonic()
        cpu1 = {role: cpu_split(pid) for role, pid in roles.items()}
        stats = system.sink_stats(reset=True)
        accepted1, delivered_total = system.accepted_delivered() if eventing else (0, 0)
    finally:
        result = finish_wrk(wrk, warm_up + duration + 30)
    delivered = int(stats["count"])
    sample = Sample(
        target.row,
        producers,
        run,
        t1 - t0,
        accepted1 - accepted0 if eventing else delivered,
        delivered,
        stats["p50_ms"],
        stats["p99_ms"],
        result.p50_ms,
        result.p99_ms,
        result.status_errors + result.socket_errors,
        {role: sum(cpu1[role]) - sum(cpu0[role]) for role in roles},
        busy1 - busy0,
        kernel={role: cpu1[role][1] - cpu0[role][1] for role in roles},
        backlog=max(0, accepted1 - delivered_total) if eventing else 0,
    )
    if eventing:
        sample.drain_s = drain(system)
    return sample


def drain(system: System) -> float | None:
    """Seconds until everything the Broker accepted was delivered; None past `DRAIN_TIMEOUT`."""
    started = time.monotonic()
    try:
        wait_for(lambda: len(set(system.accepted_delivered())) == 1, DRAIN_TIMEOUT, "backlog delivered")
    except TimeoutError:
        return None
    return time.monotonic() - started


# --- the producer check: wrk against an aiohttp client ------------------------------------------------------


@dataclass(frozen=True)
class GeneratorCheck:
    client: str
    connections: int
    rps: float
    cpu_us: float
    """Client CPU per request."""
    sink_cpu_us: float


def check_generators(folder: Path, connections: int, seconds: int) -> list[GeneratorCheck]:
    """wrk and an aiohttp client posting the same events to the sink alone (no platform): which producer
    costs less CPU per request, so that the one used is not what limits the figures."""
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, str(SINK)], env={**os.environ, "PORT": str(port)}, stdout=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: "count" in get_json(f"{url}/stats"), 30, "the sink listens")
        script = wrk_script(folder, "check", "/", f"127.0.0.1:{port}")
        sink0 = cpu_total(sink.pid)
        wrk = start_wrk(url, script, connections, seconds, "check")
        wrk_cpu = cpu_at_exit(wrk, seconds + 30)
        requests = max(finish_wrk(wrk, 10).requests, 1)
        sink_cpu = cpu_total(sink.pid) - sink0
        checks = [
            GeneratorCheck(
                "wrk (LuaJIT script)",
                connections,
                requests / seconds,
                wrk_cpu * 1e6 / requests,
                sink_cpu * 1e6 / requests,
            )
        ]
        sink0 = cpu_total(sink.pid)
        cpu0, wall0 = time.process_time(), time.monotonic()
        done = _aiohttp_load(url, connections, seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        sink_cpu = cpu_total(sink.pid) - sink0
        checks.append(
            GeneratorCheck(
                "aiohttp client (uvloop)", connections, done / wall, cpu * 1e6 / done, sink_cpu * 1e6 / done
            )
        )
        return checks
    finally:
        sink.terminate()
        sink.wait(timeout=10)


def cpu_at_exit(process: subprocess.Popen[str], timeout: float) -> float:
    """A child's CPU seconds once it has exited, read before it is reaped (a zombie keeps its times)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            break
        time.sleep(0.02)
    return cpu_total(process.pid)


def _aiohttp_load(url: str, connections: int, seconds: float) -> int:
    import asyncio

    import aiohttp
    import uvloop

    body = b'{"data":"' + b"x" * (DATA_BYTES - 11) + b'"}'

    async def load() -> int:
        done = 0
        deadline = time.monotonic() + seconds
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def producer(index: int) -> None:
                nonlocal done
                while time.monotonic() < deadline:
                    headers = {
                        "ce-specversion": "1.0",
                        "ce-id": f"a-{index}-{done}",
                        "ce-source": "/bench",
                        "ce-type": "dev.bench.event",
                        "ce-sentat": str(time.time_ns()),
                        "Content-Type": "application/json",
                    }
                    async with session.post(url + "/", data=body, headers=headers) as resp:
                        await resp.read()
                    done += 1

            await asyncio.gather(*(producer(i) for i in range(connections)))
        return done

    return uvloop.run(load())


# --- runs ---------------------------------------------------------------------------------------------------


@dataclass
class Options:
    runs: int
    warm_up: int
    duration: int
    producers: tuple[int, ...]
    backends: tuple[str, ...]
    partitions: int
    check_seconds: int


@dataclass
class Report:
    command: str
    samples: list[Sample] = field(default_factory=list)
    checks: list[GeneratorCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What could not be measured, and why."""
    load_at_start: tuple[float, ...] = field(default_factory=os.getloadavg)
    load_at_end: tuple[float, ...] = ()
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    kafka_version: str = ""
    partitions: int = 0
    source: str = ""
    """The source tree measured (`source_tree`)."""

    def rows(self) -> list[str]:
        return list(dict.fromkeys(s.row for s in self.samples))

    def of(self, row: str, producers: int) -> list[Sample]:
        return [s for s in self.samples if (s.row, s.producers) == (row, producers)]

    def ratio(self, row: str, producers: int) -> float | None:
        """Median over runs of delivered/s over the baseline's requests/s, each taken within one run."""
        base = {s.run: s.delivered_per_s for s in self.of(BASELINE, producers)}
        ratios = [s.delivered_per_s / base[s.run] for s in self.of(row, producers) if base.get(s.run)]
        return statistics.median(ratios) if ratios else None


def run_system(
    report: Report,
    options: Options,
    run: int,
    row: str,
    folder: Path,
    kafka: tuple[str, int] | None,
) -> None:
    """One `serving up` for one backend: its rows at every producer count (the baseline beside the embedded
    Broker's, alternating, so that both see the same machine)."""
    broker = "default" if kafka is None else f"kafka-run{run}"  # a fresh topic for every run
    system = System(folder, broker)
    bootstrap = None if kafka is None else kafka[0]
    try:
        started = time.monotonic()
        system.start(service_yaml() + broker_yaml(broker, bootstrap, options.partitions))
        print(f"run {run} {row}: serving up ready in {time.monotonic() - started:.1f}s", flush=True)
        targets = [Target(row, f"/default/{broker}", system.host("broker-ingress.localhost"))]
        if row == EMBEDDED:
            targets.insert(0, Target(BASELINE, "/", system.host("sink.default.localhost")))
            address = urlsplit(system.status()["eventing"]["brokers"][0]["address"])
            base = f"{address.scheme}://{address.netloc}"
            targets.append(Target(EMBEDDED_DIRECT, address.path, address.netloc, base))
        extra = {} if kafka is None else {"kafka": kafka[1]}
        for producers in options.producers:
            for target in targets:
                sample = measure(system, target, producers, run, (options.warm_up, options.duration), extra)
                report.samples.append(sample)
                print(describe(sample), flush=True)
    finally:
        system.stop()


def describe(s: Sample) -> str:
    p50 = "-" if s.p50_ms is None else f"{s.p50_ms:.1f}"
    p99 = "-" if s.p99_ms is None else f"{s.p99_ms:.1f}"
    top = sorted(s.cpu.items(), key=lambda kv: -kv[1])[:4]
    cpu = ", ".join(f"{role} {s.cpu_us(role):.0f}" for role, _ in top)
    return (
        f"run {s.run} {s.row:>8} x{s.producers:<3}: accepted {s.accepted_per_s:7.0f}/s delivered"
        f" {s.delivered_per_s:7.0f}/s p50 {p50} p99 {p99} ms errors {s.errors} backlog {s.backlog}"
        f" | CPU us/event: {cpu}"
    )


def start_kafka(folder: Path) -> tuple[Any, str]:
    """A started single-node Kafka from tests/kafka (its jars gathered by tests/kafka/prepare.sh)."""
    from tests.kafka.broker import KAFKA_VERSION, KafkaBroker, prepare_libs

    broker = KafkaBroker(prepare_libs(), folder / "kafka")
    broker.start()
    return broker, KAFKA_VERSION


def run_all(report: Report, options: Options, scratch: Path) -> None:
    kafka_broker: Any = None
    try:
        if KAFKA in options.backends:
            try:
                started = time.monotonic()
                kafka_broker, report.kafka_version = start_kafka(scratch)
                print(
                    f"kafka {kafka_broker.bootstrap} ready in {time.monotonic() - started:.1f}s", flush=True
                )
            except Exception as exc:  # the Kafka row is skipped with the reason; the others still run
                report.notes.append(f"Kafka row not measured: the broker did not start: {exc}")
        for run in range(1, options.runs + 1):
            for backend in options.backends:
                if backend == KAFKA and kafka_broker is None:
                    continue
                folder = scratch / f"run{run}-{backend}"
                folder.mkdir()
                kafka = None
                if backend == KAFKA:
                    assert kafka_broker._process is not None
                    kafka = (kafka_broker.bootstrap, kafka_broker._process.pid)
                try:
                    run_system(report, options, run, backend, folder, kafka)
                except (RuntimeError, TimeoutError, OSError) as exc:
                    note = f"run {run}, {backend}: failed: {exc}"
                    report.notes.append(note)
                    print(note, flush=True)
    finally:
        if kafka_broker is not None:
            kafka_broker.stop()


# --- report -------------------------------------------------------------------------------------------------


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _median_spread(values: Sequence[float | None], fmt: str = ".0f") -> str:
    """`median (min-max)` of the values measured, nothing when none was."""
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    median = format(statistics.median(present), fmt)
    low, high = format(min(present), fmt), format(max(present), fmt)
    return median if low == high else f"{median} ({low}-{high})"


def _summary(report: Report) -> Iterator[str]:
    yield _row(
        "row",
        "producers",
        "accepted/s",
        "delivered/s",
        "delivered vs baseline",
        "delivery p50 ms",
        "delivery p99 ms",
        "producer p50 ms",
        "producer p99 ms",
        "backlog at end",
        "drain s",
        "errors",
    )
    yield _row(*["---"] * 12)
    for producers in sorted({s.producers for s in report.samples}):
        for row in report.rows():
            samples = report.of(row, producers)
            if not samples:
                continue
            ratio = report.ratio(row, producers) if row != BASELINE else 1.0
            drains = [s.drain_s for s in samples]
            yield _row(
                row,
                producers,
                _median_spread([s.accepted_per_s for s in samples]),
                _median_spread([s.delivered_per_s for s in samples]),
                "-" if ratio is None else f"{ratio:.2f}",
                _median_spread([s.p50_ms for s in samples], ".1f"),
                _median_spread([s.p99_ms for s in samples], ".1f"),
                _median_spread([s.accept_p50_ms for s in samples], ".1f"),
                _median_spread([s.accept_p99_ms for s in samples], ".1f"),
                _median_spread([float(s.backlog) for s in samples]),
                ""
                if row == BASELINE
                else _median_spread(drains, ".1f") + (" (not all)" if None in drains else ""),
                sum(s.errors for s in samples),
            )


CPU_ROLES: Final = ("router", "eventing", "queue-proxy", "sink", "kafka", "producers (wrk)")


def _median_of(samples: Sequence[Sample], value: Callable[[Sample], float], fmt: str = ".0f") -> str:
    return format(statistics.median(value(s) for s in samples), fmt)


def _role_us(role: str) -> Callable[[Sample], float]:
    return lambda s: s.cpu_us(role)


def _rest_us(s: Sample) -> float:
    """The platform's other processes: activator, autoscaler, fork server."""
    return sum(s.cpu_us(r) for r in s.cpu if r not in CPU_ROLES)


def _cpu(report: Report) -> Iterator[str]:
    yield _row(
        "row",
        "producers",
        *[f"{r} us" for r in CPU_ROLES],
        "activator, autoscaler, fork server us",
        "ours total us",
        "cores busy (ours)",
        "cores busy (other work on the machine)",
    )
    yield _row(*["---"] * (len(CPU_ROLES) + 6))
    for producers in sorted({s.producers for s in report.samples}):
        for row in report.rows():
            samples = report.of(row, producers)
            if not samples:
                continue
            per_role = [
                _median_of(samples, _role_us(role)) if any(role in s.cpu for s in samples) else "-"
                for role in CPU_ROLES
            ]
            yield _row(
                row,
                producers,
                *per_role,
                _median_of(samples, _rest_us),
                _median_of(samples, lambda s: s.ours_cpu * 1e6 / max(s.accepted, 1)),
                _median_of(samples, lambda s: s.ours_cpu / s.seconds, ".2f"),
                _median_of(samples, lambda s: max(0.0, s.machine_cpu - s.ours_cpu) / s.seconds, ".2f"),
            )


def target_check(report: Report, row: str = EMBEDDED) -> tuple[str, bool | None]:
    """Whether the embedded Broker (`row`: producers through the router, or inside the platform) accepted and
    delivered `TARGET_EVENTS_PER_S` (medians over runs) at any producer count."""
    best: tuple[float, float, int] | None = None
    for producers in sorted({s.producers for s in report.samples}):
        samples = report.of(row, producers)
        if not samples:
            continue
        accepted = statistics.median(s.accepted_per_s for s in samples)
        delivered = statistics.median(s.delivered_per_s for s in samples)
        if best is None or min(accepted, delivered) > min(best[0], best[1]):
            best = (accepted, delivered, producers)
    if best is None:
        return "not measured", None
    met = min(best[0], best[1]) >= TARGET_EVENTS_PER_S
    verdict = "met" if met else "**not met**"
    return (
        f"{verdict}: best at {best[2]} producers, {best[0]:.0f} accepted/s and {best[1]:.0f} delivered/s"
        f" (median over runs) against {TARGET_EVENTS_PER_S:.0f}"
    ), met


MULTI_THREADED: Final = ("kafka", "producers (wrk)")
"""Processes not bound to one core (a JVM; wrk could be given threads): no one-core ceiling for them."""


def _top_consumers(report: Report) -> Iterator[str]:
    """Where the CPU goes, per eventing row at the producer count where it accepted the most: per process its
    CPU per event, how busy it was, and the events/s at which one core would be all it has (each of these
    is one asyncio event loop, so that is its ceiling whatever the machine's other cores do)."""
    for row in (EMBEDDED, EMBEDDED_DIRECT, KAFKA):
        counts = sorted({s.producers for s in report.samples if s.row == row})
        if not counts:
            continue
        producers = max(counts, key=lambda p: statistics.median(s.accepted_per_s for s in report.of(row, p)))
        samples = report.of(row, producers)
        roles = sorted({r for s in samples for r in s.cpu})
        per_role = {r: statistics.median(s.cpu_us(r) for s in samples) for r in roles}
        total = sum(per_role.values()) or 1.0
        yield f"{row} Broker, {producers} producers (where it accepted the most):"
        yield ""
        yield _row(
            "process", "CPU us/event", "share", "of it in the kernel", "cores busy", "one-core ceiling"
        )
        yield _row(*["---"] * 6)
        for role, us in sorted(per_role.items(), key=lambda kv: -kv[1]):
            if us < 1:
                continue
            kernel = statistics.median(s.kernel.get(role, 0.0) / max(s.cpu[role], 1e-9) for s in samples)
            cores = statistics.median(s.cpu[role] / s.seconds for s in samples)
            ceiling = "-" if role in MULTI_THREADED else f"{1e6 / us:,.0f} events/s"
            yield _row(role, f"{us:.0f}", f"{us / total:.0%}", f"{kernel:.0%}", f"{cores:.2f}", ceiling)
        yield ""


def _generators(report: Report) -> Iterator[str]:
    if not report.checks:
        return
    yield "## Producers: wrk against an aiohttp client"
    yield ""
    yield (
        "The same events posted to the sink alone (no platform), closed loop, so that the producer used is"
        " the cheaper one and its cost is known:"
    )
    yield ""
    yield _row("client", "connections", "req/s", "client CPU us/req", "sink CPU us/req")
    yield _row(*["---"] * 5)
    for c in report.checks:
        yield _row(c.client, c.connections, f"{c.rps:.0f}", f"{c.cpu_us:.1f}", f"{c.sink_cpu_us:.1f}")
    yield ""


def _every_run(report: Report) -> Iterator[str]:
    yield _row(
        "run", "row", "producers", "window s", "accepted/s", "delivered/s", "p50 ms", "p99 ms",
        "backlog", "drain s", "errors", "CPU us/event by process",
    )  # fmt: skip
    yield _row(*["---"] * 12)
    for s in sorted(report.samples, key=lambda s: (s.run, s.producers)):
        ranked = sorted(s.cpu, key=lambda r: -s.cpu[r])
        cpu = ", ".join(f"{r} {s.cpu_us(r):.0f}" for r in ranked if s.cpu_us(r) >= 0.5)
        drain_s = (
            "-" if s.row == BASELINE else ("not within limit" if s.drain_s is None else f"{s.drain_s:.1f}")
        )
        yield _row(
            s.run, s.row, s.producers, f"{s.seconds:.2f}", f"{s.accepted_per_s:.0f}",
            f"{s.delivered_per_s:.0f}", "-" if s.p50_ms is None else f"{s.p50_ms:.1f}",
            "-" if s.p99_ms is None else f"{s.p99_ms:.1f}", s.backlog, drain_s, s.errors, cpu,
        )  # fmt: skip


def _environment(report: Report) -> Iterator[str]:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.machine(),
    )  # fmt: skip
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / (1 << 20)
    yield (
        f"- machine: {os.cpu_count()} CPUs ({model}), {memory:.1f} GiB memory, Linux {platform.release()},"
        f" Python {platform.python_version()}; run started {report.started}"
    )
    start, end = (" ".join(f"{x:.2f}" for x in load) for load in (report.load_at_start, report.load_at_end))
    yield f"- load average (1/5/15 min) at the start: {start}; at the end: {end}"
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    version = (wrk.stdout or wrk.stderr).splitlines()[0].split(" Copyright")[0].strip()
    yield f"- producers: {version}, one thread (`-t1`), `--timeout 10s`"
    yield f"- source: {report.source or source_tree()}"
    yield (
        "- sink Service: one pod (min-scale = max-scale = 1), target-burst-capacity 0 (the router sends to"
        " the pod's queue-proxy, no activator), containerConcurrency 0"
    )
    hot = (
        "compiled with mypyc (setup.py)"
        if hot_path_compiled()
        else "**pure Python** (no compiled extensions)"
    )
    yield f"- data plane (router, queue-proxy): {hot}"
    if report.kafka_version:
        yield (
            f"- Kafka {report.kafka_version}, one KRaft node (tests/kafka/broker.py: serial GC, C1 only,"
            f" 512 MiB heap); the Broker's topic has {report.partitions} partitions"
        )
    for note in report.notes:
        yield f"- {note}"


def source_tree() -> str:
    """The commit measured, and how many files of the working tree differ from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    if head.returncode != 0:
        return f"{ROOT} (not a git checkout)"
    changed = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, check=False)
    count = len(changed.stdout.splitlines())
    return f"commit {head.stdout.strip()}" + (
        f" with {count} files changed or added (not committed)" if count else ""
    )


def render(report: Report, plot: str | None) -> str:
    verdict, _ = target_check(report)
    direct, _ = target_check(report, EMBEDDED_DIRECT)
    lines = [
        "# Eventing benchmark: events/s through Broker -> Trigger -> Service",
        "",
        "`serving up` with one Broker, one Trigger (no filter) and a warm sink Service (min-scale 1,",
        "benchmarks/eventing_sink.py: an asyncio protocol with httptools under uvloop that counts",
        "events). Producers are `wrk` connections each posting one binary-mode CloudEvent after another",
        f"({DATA_BYTES} B of JSON data, a unique `ce-id`, and `ce-sentat`: the wall clock in ns when",
        "sent) to the Broker's ingress through the router (`Host: broker-ingress.localhost`). The",
        "*baseline* row posts the same requests straight to the sink Service through the router",
        "(`Host: sink.default.localhost`), in the same `serving up`, alternating with the embedded row, so",
        "that ratios compare like with like. The *embedded-direct* row has the producers post to the",
        "Broker's address inside the platform (`http://127.0.0.1:{eventing port}/...`, the `K_SINK` of",
        "a SinkBinding or ContainerSource): producers inside the platform skip the router, as Knative's",
        "in-cluster producers post to broker-ingress directly. Delivery goes through the router either way.",
        "",
        "Each figure is taken over a window after a warm-up, with the load running on both sides of it:",
        "*accepted* is the Broker's count of 202s in the window (the eventing component's admin `/status`),",
        "*delivered* the sink's count in the window; *delivery latency* is sink receipt minus `sentat` for",
        "the events the sink received in the window (nearest rank; it includes the producer's hop into the",
        "ingress and the durable write); *producer* latency is wrk's response time (a 202 from the ingress).",
        "CPU is each process's user+system time (/proc/<pid>/stat) in the window per accepted event; when",
        "a backlog builds (accepted > delivered) the delivery side's cost per delivered event is higher.",
        "After each eventing measurement the benchmark waits for the backlog to be delivered (*drain*).",
        "",
        "Command:",
        "",
        "```",
        report.command,
        "```",
        "",
        *_environment(report),
        "",
        f"**Target** ({TARGET_EVENTS_PER_S:.0f} events/s accepted and delivered, embedded Broker):"
        f" producers through the router: {verdict}; producers inside the platform: {direct}.",
        "",
        "## Summary (median over runs, min-max in brackets)",
        "",
        *_summary(report),
        "",
        *([f"![events/s]({plot})", ""] if plot else []),
        "## CPU per accepted event, by process (median over runs, microseconds)",
        "",
        "The router is the `serving up` process: for an event it proxies the producer's POST to the ingress",
        "and the delivery to the queue-proxy. *cores busy* is CPU seconds per second of the window.",
        "",
        *_cpu(report),
        "",
        "## Where the CPU goes",
        "",
        *_top_consumers(report),
        *_generators(report),
        "## Every run",
        "",
        *_every_run(report),
        "",
    ]
    return "\n".join(lines)


PLOTTED: Final = (
    (BASELINE, "delivered_per_s", "baseline: straight to the Service", "#7f7f7f", ""),
    (EMBEDDED, "accepted_per_s", "embedded Broker: accepted", "#1f77b4", "//"),
    (EMBEDDED, "delivered_per_s", "embedded Broker: delivered", "#1f77b4", ""),
    (EMBEDDED_DIRECT, "accepted_per_s", "embedded, producers inside: accepted", "#2ca02c", "//"),
    (EMBEDDED_DIRECT, "delivered_per_s", "embedded, producers inside: delivered", "#2ca02c", ""),
    (KAFKA, "accepted_per_s", "Kafka Broker: accepted", "#ff7f0e", "//"),
    (KAFKA, "delivered_per_s", "Kafka Broker: delivered", "#ff7f0e", ""),
)
"""(row, figure, label, colour, hatch) of each bar of a producer count's group."""


def plot(report: Report, path: Path) -> bool:
    """Events/s per producer count, one bar per row and figure (median over runs, min-max whiskers, the
    median written on the bar); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    shown = [bar for bar in PLOTTED if any(s.row == bar[0] for s in report.samples)]
    groups = sorted({s.producers for s in report.samples})
    width = 0.8 / len(shown)
    fig, ax = plt.subplots(figsize=(9, 5))
    for index, (row, attr, label, colour, hatch) in enumerate(shown):
        xs, medians, low, high = [], [], [], []
        for group, producers in enumerate(groups):
            values = [float(getattr(s, attr)) for s in report.of(row, producers)]
            if not values:
                continue
            median = statistics.median(values)
            xs.append(group - 0.4 + width * (index + 0.5))
            medians.append(median)
            low.append(median - min(values))
            high.append(max(values) - median)
        bars = ax.bar(xs, medians, width, yerr=[low, high], capsize=2, label=label, color=colour, hatch=hatch)
        ax.bar_label(bars, labels=[f"{m:,.0f}" for m in medians], fontsize=6, padding=2, rotation=90)
    ax.axhline(TARGET_EVENTS_PER_S, color="red", linestyle=":", label=f"target {TARGET_EVENTS_PER_S:,.0f}/s")
    ax.set_xticks(range(len(groups)), [str(p) for p in groups])
    ax.set_xlabel("concurrent producers")
    ax.set_ylabel("events/s (median over runs, min-max whiskers)")
    ax.set_title(f"Broker -> Trigger -> Service, `serving up` on {os.cpu_count()} CPUs")
    ax.set_ylim(top=ax.get_ylim()[1] * 1.12)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --- main ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Files:
    out: Path | None
    """The markdown report (the plot beside it, `.png`)."""
    samples: Path | None
    """Where to keep every measurement as JSON, to render the report again later."""
    render: Path | None
    """Render the report from these saved measurements instead of measuring."""


def parse(argv: list[str]) -> tuple[Options, Files]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warm-up", type=int, default=3, help="seconds of load before each window")
    parser.add_argument("--duration", type=int, default=10, help="seconds of each measured window")
    parser.add_argument("--producers", default=",".join(map(str, PRODUCERS)), help="producer counts")
    parser.add_argument("--backends", default=f"{EMBEDDED},{KAFKA}", help=f"{EMBEDDED} and/or {KAFKA}")
    parser.add_argument("--partitions", type=int, default=10, help="Kafka topic partitions (Knative: 10)")
    parser.add_argument("--check-seconds", type=int, default=3, help="producer check per client; 0: none")
    parser.add_argument("--quick", action="store_true", help="one run, 2 s windows, embedded Broker only")
    parser.add_argument("--out", type=Path, default=None, help="markdown report (the plot beside it, .png)")
    parser.add_argument("--samples", type=Path, default=None, help="also save every measurement as JSON")
    parser.add_argument("--render", type=Path, default=None, help="report saved --samples, measure nothing")
    args = parser.parse_args(argv)
    backends = tuple(b.strip() for b in args.backends.split(","))
    if any(b not in (EMBEDDED, KAFKA) for b in backends) or not backends:
        parser.error(f"--backends names {EMBEDDED} and/or {KAFKA}")
    producers = tuple(int(p) for p in args.producers.split(","))
    options = Options(
        args.runs, args.warm_up, args.duration, producers, backends, args.partitions, args.check_seconds
    )
    if args.quick:
        checks = min(args.check_seconds, 1)
        options = Options(1, 1, 2, options.producers, (EMBEDDED,), args.partitions, checks)
    if min(options.runs, options.duration, *options.producers) < 1 or options.warm_up < 0:
        parser.error("--runs, --duration and --producers must be positive")
    return options, Files(args.out, args.samples, args.render)


def save(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(report), indent=1))


def load(path: Path) -> Report:
    doc = json.loads(path.read_text())
    doc["samples"] = [Sample(**sample) for sample in doc["samples"]]
    doc["checks"] = [GeneratorCheck(**check) for check in doc["checks"]]
    doc["load_at_start"], doc["load_at_end"] = tuple(doc["load_at_start"]), tuple(doc["load_at_end"])
    return Report(**doc)


def measure_all(command: str, options: Options) -> Report:
    report = Report(command, partitions=options.partitions)
    with tempfile.TemporaryDirectory(prefix="eventing-bench-") as scratch:
        if options.check_seconds:
            report.checks = check_generators(Path(scratch), 10, options.check_seconds)
            for check in report.checks:
                print(f"producer check: {check}", flush=True)
        run_all(report, options, Path(scratch))
    report.load_at_end = os.getloadavg()
    report.source = source_tree()
    return report


def main(argv: list[str] | None = None) -> int:
    arguments = argv if argv is not None else sys.argv[1:]
    options, files = parse(arguments)
    if files.render is not None:
        report = load(files.render)
    elif shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    else:
        report = measure_all(shlex.join(["python", "benchmarks/eventing.py", *arguments]), options)
        if files.samples is not None:
            save(report, files.samples)
    picture = None
    if files.out is not None:
        files.out.parent.mkdir(parents=True, exist_ok=True)
        png = files.out.with_suffix(".png")
        if report.samples and plot(report, png):
            picture = png.name
        elif report.samples:
            report.notes.append("no plot: matplotlib is not installed (pip install -e '.[bench]')")
    text = render(report, picture)
    if files.out is not None:
        files.out.write_text(text)
    print(text)
    return 0 if report.samples and not report.notes else 1


if __name__ == "__main__":
    sys.exit(main())
