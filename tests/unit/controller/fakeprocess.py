"""Processes that behave like real ones (exit codes, signals, SIGTERM delays) without forking, for tests."""

from __future__ import annotations

import asyncio
import itertools
import signal

from controller.local.runtime.pod import READY, PodPorts, ProbeResult
from controller.local.runtime.process import Process, ProcessSpec

_pids = itertools.count(1000)


POD_ENV = "SERVING_POD"
"""Names the pod of a process (the queue-proxy's variable; the fake user processes get it too)."""


class FakeProcess:
    """A process that exits when told to, or on SIGTERM after `term_delay` seconds, or on SIGKILL."""

    def __init__(self, spec: ProcessSpec, events: list[tuple[str, str]], term_delay: float) -> None:
        self.spec = spec
        self.role = "queue-proxy" if spec.argv[-1] == "queue-proxy" else "user"
        self.pid = next(_pids)
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._events = events
        self._term_delay = term_delay
        self.signals: list[int] = []

    @property
    def returncode(self) -> int | None:
        return self._exit.result() if self._exit.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    def exit(self, code: int) -> None:
        if not self._exit.done():
            self._events.append((self.role, f"exit {code}"))
            self._exit.set_result(code)

    def signal(self, sig: int) -> None:
        if self._exit.done():
            return
        self.signals.append(sig)
        self._events.append((self.role, signal.Signals(sig).name))
        if sig == signal.SIGKILL:
            self.exit(-9)
        elif sig == signal.SIGTERM:
            asyncio.get_running_loop().call_later(self._term_delay, self.exit, 0)


class FakeLauncher:
    def __init__(self) -> None:
        self.processes: list[FakeProcess] = []
        self.events: list[tuple[str, str]] = []
        self.term_delay = {"queue-proxy": 0.02, "user": 0.0}
        self.fail_user_start = False
        self.probe = FakeProber(self)

    async def start(self, spec: ProcessSpec) -> Process:
        role = "queue-proxy" if spec.argv[-1] == "queue-proxy" else "user"
        if role == "user" and self.fail_user_start:
            raise FileNotFoundError(2, "No such file or directory", spec.argv[0])
        proc = FakeProcess(spec, self.events, self.term_delay[role])
        self.processes.append(proc)
        self.events.append((proc.role, "start"))
        return proc

    def alive(self, role: str, pod: str | None = None) -> list[FakeProcess]:
        return [
            p
            for p in self.processes
            if p.role == role and p.returncode is None and (pod is None or p.spec.env.get(POD_ENV) == pod)
        ]


class FakeProber:
    """Ready while the pod's queue-proxy process is alive and `app_listening`, as a real one answers 200
    `queue` once the app listens; a queue-proxy that is gone refuses the probe's connection."""

    def __init__(self, launcher: FakeLauncher) -> None:
        self._launcher = launcher
        self.app_listening = True
        self.diagnoses = 0

    async def __call__(self, ports: PodPorts, token: str = "") -> ProbeResult:
        alive = self._launcher.alive("queue-proxy")
        mine = [p for p in alive if p.spec.env["QUEUE_SERVING_PORT"] == str(ports.serving)]
        if not mine:
            return ProbeResult(False, f"not listening on port {ports.serving}")
        if mine[0].spec.env.get("SERVING_PROBE_TOKEN", "") != token:
            # A real queue-proxy passes a probe without its token on to the app, which does not say `queue`.
            return ProbeResult(False, "answering the readiness probe with 200 from the app")
        if not self.app_listening:
            return ProbeResult(
                False, "not ready (the queue-proxy answers 503 the app is not ready)", user=True
            )
        return READY

    async def diagnose(self, ports: PodPorts, http_path: str | None) -> str | None:
        self.diagnoses += 1
        return None if self.app_listening else f"not listening on port {ports.user}"
