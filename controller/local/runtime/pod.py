"""One local pod: the user container and its queue-proxy, two process groups on loopback ports.

The pod is ready while its queue-proxy answers a kubelet-style readiness probe and the user process runs;
while it is not, `reason` says why (the app not listening on its port, its probe failing, a crash loop). A
crashed user process is restarted with CrashLoopBackOff-style delays while the queue-proxy keeps running; a
crashed queue-proxy ends the pod (the supervisor replaces it). Termination follows Knative's order: the
queue-proxy drains first (it keeps accepting during its quiet period and waits for in-flight requests), and
only once it has exited does the user process get SIGTERM, so the app serves every request it was handed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from controller.local.runtime.backoff import BackoffPolicy, CrashCounter
from controller.local.runtime.container import ImageUnavailable, PodSandbox
from controller.local.runtime.process import Launcher, Process, ProcessSpec, describe_exit, stop
from controller.local.runtime.rotation import RotationPolicy
from serving.envsource import EnvSourceError
from serving.platform import Pod

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class PodPorts:
    user: int
    """The app's `PORT` (replaces the container's declared containerPort locally)."""
    serving: int
    admin: int
    stats: int
    metrics: int

    def all(self) -> tuple[int, ...]:
        return (self.user, self.serving, self.admin, self.stats, self.metrics)


@dataclass(frozen=True, slots=True)
class Sidecar:
    build: Callable[[], ProcessSpec]
    """Builds its spec at each (re)start, as `PodProcesses.user`."""
    log: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class PodProcesses:
    queue_proxy: ProcessSpec
    user: Callable[[], ProcessSpec]
    """Builds the user container's spec at each (re)start: its ConfigMap and Secret variables are read then,
    as the kubelet reads them; raises `EnvSourceError` when one cannot be."""
    user_log: Path
    """The user container's log file."""
    cleanup: Callable[[], None] | None = None
    """Runs once the pod's processes are gone (its volumes are removed)."""
    sidecars: tuple[Sidecar, ...] = ()
    """The other containers of a multi-container pod, each restarted with back-off like the user one."""
    sandbox: PodSandbox | None = None
    """The podman pod whose network namespace the containers share (made before them, removed after)."""
    readiness_path: str | None = None
    """Path of the app's `httpGet` readiness probe on its port (None: a TCP probe); probed directly to say
    why a pod is not ready."""
    probe_token: str = ""
    """What the queue-proxy requires on probes (`K-Network-Probe-Token`); empty: nothing."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PodSettings:
    probe_interval: float = 0.1
    """Readiness probe period until the pod is ready, seconds (polled fast so cold starts end early)."""
    ready_probe_interval: float = 1.0
    """Readiness probe period once ready, seconds."""
    failure_threshold: int = 3
    """Consecutive failed probes before a ready pod is marked not ready (Kubernetes default 3)."""
    orphan_grace: float = 2.0
    """Seconds the user process gets after SIGTERM when its queue-proxy died, before SIGKILL."""
    min_user_grace: float = 1.0
    """Seconds the user process always gets after SIGTERM, even when the queue-proxy used the whole grace."""
    diagnose_interval: float = 1.0
    """Seconds between direct checks of a not-ready app's port (for the reason in status), so that a pod
    probed every 100 ms costs its app at most one extra connection a second."""
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    log_rotation: RotationPolicy = field(default_factory=RotationPolicy)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one readiness probe of a pod found."""

    ready: bool
    reason: str | None = None
    """Why not, as the end of a sentence about a container: `not listening on port 40123`."""
    user: bool = False
    """The reason is about the user container (else about the queue-proxy)."""


READY = ProbeResult(True)


class Prober(Protocol):
    """Probes a pod as the kubelet does, through its queue-proxy, and looks closer at a not-ready app."""

    async def __call__(self, ports: PodPorts, token: str = "") -> ProbeResult:
        """Ready on 200 `queue` from the queue-proxy; else why not, as far as its answer tells."""
        ...

    async def diagnose(self, ports: PodPorts, http_path: str | None) -> str | None:
        """Why the app on `ports.user` is not ready, found by connecting to it (and GET `http_path`)."""
        ...


def duration(seconds: float) -> str:
    """`42s`, `3m5s`, `2h10m`: kubectl's way of showing an age (whole units, rounded down)."""
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60}s"
    return f"{whole // 3600}h{whole % 3600 // 60}m"


class LocalPod:
    """Runs one pod until it is terminated or its queue-proxy exits; `run` does the work."""

    def __init__(
        self,
        *,
        name: str,
        ports: PodPorts,
        processes: PodProcesses,
        grace: float,
        launcher: Launcher,
        prober: Prober,
        settings: PodSettings,
        on_change: Callable[[], None],
    ) -> None:
        self.name = name
        self.ports = ports
        self.created = time.time()
        self.created_monotonic = time.monotonic()
        self.ready = False
        self.terminating = False
        self.failed = False
        """The pod ended without being asked to (its queue-proxy exited)."""
        self.waiting: str | None = None
        """`CrashLoopBackOff: ...` while a restart of the user container is being delayed."""
        self.last_exit: str | None = None
        """How the user container (or the queue-proxy) last ended."""
        self.restarts = 0
        self._processes = processes
        self._grace = grace
        self._launcher = launcher
        self._prober = prober
        self._settings = settings
        self._on_change = on_change
        self._crashes = CrashCounter(settings.backoff)
        self._stop = asyncio.Event()
        self._configs_changed = asyncio.Event()
        """Set when ConfigMaps or Secrets change: a user container waiting for one retries at once."""
        self._qp: Process | None = None
        self._user: Process | None = None
        self._sidecar_processes: dict[int, Process] = {}
        self._user_running = False
        self._user_started = self.created_monotonic
        self._qp_started = self.created_monotonic
        self._problem: ProbeResult | None = None
        """What the last failed probe found (None after a success or before the first probe)."""
        self._diagnosed_at = -math.inf

    @property
    def log_paths(self) -> tuple[Path, ...]:
        """The user container's, the queue-proxy's and the sidecars' log files."""
        sidecars = (s.log for s in self._processes.sidecars)
        return (self._processes.user_log, self._processes.queue_proxy.log_path, *sidecars)

    def reason(self, now: float) -> str | None:
        """Why the pod is not ready, for status; None while it is ready or terminating. `now` is monotonic."""
        if self.waiting:
            return self.waiting
        if self.ready or self.terminating:
            return None
        if not self._user_running:
            if self.last_exit:
                return f"user-container restarting ({self.last_exit})"
            return "user-container starting"
        problem = self._problem
        running = f"user-container running for {duration(now - self._user_started)}"
        if problem is None:
            return f"{running}, waiting for its first readiness probe"
        if problem.user:
            return f"{running} but {problem.reason}"
        return f"queue-proxy running for {duration(now - self._qp_started)} but {problem.reason}"

    def to_platform(self) -> Pod:
        return Pod(
            name=self.name,
            host="127.0.0.1",
            port=self.ports.serving,
            stats_port=self.ports.stats,
            admin_port=self.ports.admin,
            ready=self.ready,
            started_at=self.created,
        )

    def configs_changed(self) -> None:
        """ConfigMaps or Secrets changed: a user container that waits for one is retried now, not after its
        back-off (the kubelet retries on its own schedule; locally the change is known at once)."""
        self._configs_changed.set()

    def terminate(self, grace: float | None = None) -> None:
        """Ask the pod to stop gracefully within `grace` seconds (default: the revision's)."""
        if grace is not None:
            self._grace = min(self._grace, grace)
        if not self.terminating:
            self.terminating = True
            self._set_ready(False)
            self._stop.set()

    async def run(self) -> None:
        tasks: list[asyncio.Task[object]] = []
        try:
            try:
                self._qp = await self._launcher.start(self._processes.queue_proxy)
                self._qp_started = time.monotonic()
            except OSError as exc:
                self.failed = True
                self.last_exit = f"queue-proxy failed to start: {exc}"
                log.error("pod %s: %s", self.name, self.last_exit)
                return
            sandbox = self._processes.sandbox
            if sandbox is not None:
                try:
                    await sandbox.create()
                except OSError as exc:
                    self.failed = True
                    self.last_exit = f"pod network failed: {exc}"
                    log.error("pod %s: %s", self.name, self.last_exit)
                    return
            keepers = [
                asyncio.create_task(self._keep_sidecar(i, sidecar))
                for i, sidecar in enumerate(self._processes.sidecars)
            ]
            keeper = asyncio.create_task(self._keep_user())
            prober = asyncio.create_task(self._probe())
            qp_exit = asyncio.create_task(self._qp.wait())
            stopping = asyncio.create_task(self._stop.wait())
            tasks = [*keepers, keeper, prober, qp_exit, stopping]
            await asyncio.wait((qp_exit, stopping), return_when=asyncio.FIRST_COMPLETED)
            self._set_ready(False)
            for task in (*keepers, keeper, prober, stopping):
                task.cancel()
            await asyncio.gather(*keepers, keeper, prober, stopping, return_exceptions=True)
            if qp_exit.done():
                await self._after_queue_proxy_exit(qp_exit.result())
            else:
                await self._graceful_stop(qp_exit)
        finally:
            for pending in tasks:
                pending.cancel()
            await self._kill_all()
            if self._processes.sandbox is not None:
                await self._processes.sandbox.remove()
            if self._processes.cleanup is not None:
                self._processes.cleanup()

    async def _after_queue_proxy_exit(self, code: int) -> None:
        if not self.terminating:
            self.failed = True
            self.last_exit = f"queue-proxy {describe_exit(code)}"
            log.warning("pod %s: %s; replacing the pod", self.name, self.last_exit)
        await asyncio.gather(*(stop(p, self._settings.orphan_grace) for p in self._containers()))

    async def _graceful_stop(self, qp_exit: asyncio.Task[int]) -> None:
        assert self._qp is not None
        deadline = time.monotonic() + self._grace
        self._qp.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(qp_exit), self._grace)
        except TimeoutError:
            log.warning("pod %s: queue-proxy still draining after %.1fs; killing it", self.name, self._grace)
        self._qp.signal(signal.SIGKILL)
        await qp_exit
        remaining = max(deadline - time.monotonic(), self._settings.min_user_grace)
        await asyncio.gather(*(stop(p, remaining) for p in self._containers()))

    def _containers(self) -> list[Process]:
        """The user container and the sidecars that still run."""
        running = [self._user, *self._sidecar_processes.values()]
        return [p for p in running if p is not None and p.returncode is None]

    async def _kill_all(self) -> None:
        for process in (self._qp, self._user, *self._sidecar_processes.values()):
            if process is not None and process.returncode is None:
                process.signal(signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    await process.wait()

    async def _keep_sidecar(self, index: int, sidecar: Sidecar) -> None:
        """Run one sidecar container, restarting it with back-off whenever it exits (a sidecar has no
        readiness of its own here: Knative probes only the serving container by default)."""
        crashes = CrashCounter(self._settings.backoff)
        while True:
            started = time.monotonic()
            try:
                process = self._sidecar_processes[index] = await self._launcher.start(sidecar.build())
            except (EnvSourceError, OSError) as exc:
                description = f"not started: {exc}"
            else:
                description = describe_exit(await process.wait())
            delay = crashes.crashed(time.monotonic() - started)
            _append(sidecar.log, f"serving: sidecar {description}; restarting in {delay:g}s\n")
            log.warning("pod %s: sidecar %d %s; restart in %gs", self.name, index, description, delay)
            await asyncio.sleep(delay)

    async def _keep_user(self) -> None:
        """Run the user process, restarting it with back-off whenever it exits."""
        while True:
            started = time.monotonic()
            waiting = "CrashLoopBackOff"  # the kubelet's names for why a container waits to (re)start
            try:
                self._user = await self._launcher.start(self._processes.user())
            except (EnvSourceError, OSError) as exc:
                if isinstance(exc, EnvSourceError):
                    waiting = "CreateContainerConfigError"
                elif isinstance(exc, ImageUnavailable):
                    waiting = "ImagePullBackOff"
                verb = "failed to start" if waiting == "CrashLoopBackOff" else "not started"
                description = f"{verb}: {exc}"
                _append(self._processes.user_log, f"serving: user container {description}\n")
            else:
                self._user_running = True
                self._user_started = started
                self._problem = None
                self.waiting = None
                self._on_change()
                code = await self._user.wait()
                self._user_running = False
                self._user.signal(signal.SIGKILL)  # workers the app forked must not outlive it
                description = describe_exit(code)
            self._set_ready(False)
            delay = self._crashes.crashed(time.monotonic() - started)
            self.restarts = self._crashes.restarts
            self.last_exit = f"user container {description}"
            if delay > 0:
                self.waiting = f"{waiting}: restarting in {delay:g}s ({self.last_exit})"
            log.warning("pod %s: %s; restart %d in %gs", self.name, self.last_exit, self.restarts, delay)
            self._on_change()
            if waiting == "CreateContainerConfigError":
                self._configs_changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._configs_changed.wait(), delay)
            else:
                await asyncio.sleep(delay)

    async def _probe(self) -> None:
        failures = 0
        while True:
            result = (
                await self._prober(self.ports, self._processes.probe_token) if self._user_running else None
            )
            if result is not None and result.ready:
                failures = 0
                self._problem = None
                if self._user_running and not self.terminating:
                    self._set_ready(True)
            else:
                failures += 1
                if not self._user_running or failures >= self._settings.failure_threshold:
                    self._set_ready(False)
                if result is not None and self._user_running:
                    self._problem = await self._explain(result)
            interval = self._settings.ready_probe_interval if self.ready else self._settings.probe_interval
            await asyncio.sleep(interval)

    async def _explain(self, result: ProbeResult) -> ProbeResult:
        """A failed probe that blames the app, with a closer look at the app (at most once a diagnose
        interval; in between the last finding stands)."""
        if not result.user:
            return result
        now = time.monotonic()
        last = self._problem
        if last is not None and last.user and now - self._diagnosed_at < self._settings.diagnose_interval:
            return last
        self._diagnosed_at = now
        detail = await self._prober.diagnose(self.ports, self._processes.readiness_path)
        return result if detail is None else ProbeResult(False, detail, user=True)

    def _set_ready(self, ready: bool) -> None:
        if self.ready != ready:
            self.ready = ready
            self._on_change()


def _append(log_path: Path, text: str) -> None:
    """Note an event in a container's log, where `serving logs` shows it beside the app's own output."""
    with contextlib.suppress(OSError):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as out:
            out.write(text)
