"""The local supervisor: keeps each revision's pods at the replica count the autoscaler asked for.

It plays the part of a Deployment controller and kubelet on one machine. Scale-out starts pods at once;
scale-in removes the pods the autoscaler named (the idlest), then pods that are not ready, then the newest.
A pod whose queue-proxy died is replaced, after a back-off when that keeps happening. Pods are published to
the store (only pods that are not terminating, as Kubernetes endpoints do) whenever one changes. As the
kubelet does, it also rotates the pods' log files once they grow past a size
(`controller.local.runtime.rotation`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from controller.local.runtime.backoff import CrashCounter
from controller.local.runtime.pod import LocalPod, PodPorts, PodProcesses, PodSettings, Prober, duration
from controller.local.runtime.port import PortAllocator
from controller.local.runtime.process import Launcher
from controller.local.runtime.rotation import LogRotator, policy_from_environ
from controller.local.store import Store
from serving.platform import Revision, RevisionKey

log = logging.getLogger(__name__)

_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True, slots=True, kw_only=True)
class RevisionSpec:
    """What the supervisor needs to run a revision's pods."""

    revision: Revision
    initial_scale: int
    """Replicas to run until the autoscaler says otherwise (`autoscaling.knative.dev/initial-scale`, 1)."""
    grace: float
    """Seconds a terminating pod gets before SIGKILL (Knative: the revision's timeoutSeconds)."""
    processes: Callable[[str, PodPorts], PodProcesses]
    """Builds a pod's two processes from its name and ports."""


@dataclass(slots=True, eq=False)
class _RevisionState:
    spec: RevisionSpec
    desired: int
    pods: dict[str, LocalPod] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    remove_first: list[str] = field(default_factory=list)
    deleted: bool = False
    pod_failures: CrashCounter | None = None
    hold_until: float = 0.0
    """No new pod before this monotonic time (back-off after pods failed)."""
    last_failure: str | None = None
    """How the last pod that failed ended (`pod NAME ended: queue-proxy exit code 1`)."""


class Supervisor:
    def __init__(
        self,
        store: Store,
        launcher: Launcher,
        prober: Prober,
        ports: PortAllocator,
        settings: PodSettings | None = None,
    ) -> None:
        """Without `settings`, the defaults, with the log rotation the `SERVING_LOG_*` variables set."""
        self._store = store
        self._launcher = launcher
        self._prober = prober
        self._ports = ports
        self._config_problems: list[str] = []
        if settings is None:
            rotation, self._config_problems = policy_from_environ(os.environ)
            settings = PodSettings(log_rotation=rotation)
        self._settings = settings
        self._rotator = LogRotator(settings.log_rotation)
        self._revisions: dict[RevisionKey, _RevisionState] = {}
        self._wake = asyncio.Event()
        self._closing = False

    # --- what the reconciler and the platform API call -------------------------------------------------

    def add(self, spec: RevisionSpec) -> None:
        """Start running a new revision (or update the settings of a known one)."""
        key = spec.revision.key
        state = self._revisions.get(key)
        if state is None or state.deleted:
            state = _RevisionState(spec=spec, desired=spec.initial_scale)
            state.pod_failures = CrashCounter(self._settings.backoff)
            self._revisions[key] = state
        else:
            state.spec = spec
        self._store.put_revision(spec.revision)
        self._publish(key)
        self._wake.set()

    def remove(self, key: RevisionKey) -> None:
        """Delete a revision: it leaves the platform at once and its pods terminate gracefully."""
        state = self._revisions.get(key)
        if state is None:
            return
        state.deleted = True
        state.desired = 0
        self._store.remove_revision(key)
        self._wake.set()

    def configs_changed(self) -> None:
        """ConfigMaps or Secrets changed: pods waiting for one retry now."""
        for state in self._revisions.values():
            for pod in state.pods.values():
                pod.configs_changed()

    def scale(self, key: RevisionKey, replicas: int, remove: list[str]) -> bool:
        state = self._revisions.get(key)
        if state is None or state.deleted:
            return False
        if state.desired != replicas:
            log.info("scale %s: %d -> %d pods", key, state.desired, replicas)
        state.desired = replicas
        state.remove_first = list(remove)
        self._wake.set()
        return True

    # --- what status and the router read -----------------------------------------------------------------

    def keys(self) -> list[RevisionKey]:
        return sorted(k for k, s in self._revisions.items() if not s.deleted)

    def desired(self, key: RevisionKey) -> int:
        state = self._revisions.get(key)
        return 0 if state is None else state.desired

    def pods(self, key: RevisionKey) -> list[LocalPod]:
        """Every pod of the revision, terminating ones included, oldest first."""
        state = self._revisions.get(key)
        if state is None:
            return []
        return sorted(state.pods.values(), key=lambda p: p.created_monotonic)

    def pod_count(self) -> int:
        return sum(len(s.pods) for s in self._revisions.values())

    def reasons(self, key: RevisionKey, now: float) -> list[str]:
        """Why the revision has fewer pods than desired that no pod of it can tell: a replacement held back
        after pods failed. `now` is monotonic."""
        state = self._revisions.get(key)
        if state is None or state.last_failure is None or now >= state.hold_until:
            return []
        return [f"{state.last_failure}; next pod in {duration(math.ceil(state.hold_until - now))}"]

    def log_paths(self) -> list[Path]:
        """The log files of every pod, terminating ones included (they write until they exit)."""
        return [path for s in self._revisions.values() for pod in s.pods.values() for path in pod.log_paths]

    # --- running -------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile whenever something changed, and rotate pod logs; runs until cancelled."""
        for problem in self._config_problems:
            log.warning("log rotation: %s; using the defaults", problem)
        rotator = asyncio.create_task(self._rotate_logs(), name="log rotation")
        try:
            await self._reconcile_forever()
        finally:
            rotator.cancel()
            await asyncio.gather(rotator, return_exceptions=True)

    async def _rotate_logs(self) -> None:
        try:
            await self._rotator.run(self.log_paths)
        except Exception:  # the task's boundary: pods keep running, their logs just stop being rotated
            log.exception("log rotation failed; pod logs are no longer rotated")

    async def _reconcile_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._closing:
                continue
            for key, state in list(self._revisions.items()):
                self._reconcile(key, state)

    async def shutdown(self, grace: float) -> None:
        """Terminate every pod within `grace` seconds, then kill what is left."""
        self._closing = True
        tasks = [t for s in self._revisions.values() for t in s.tasks.values()]
        for state in self._revisions.values():
            for pod in state.pods.values():
                pod.terminate(grace)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace + 2.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _reconcile(self, key: RevisionKey, state: _RevisionState) -> None:
        live = [p for p in state.pods.values() if not p.terminating]
        if len(live) > state.desired:
            for pod in self._victims(live, len(live) - state.desired, state.remove_first):
                log.info("pod %s: terminating (scale-in of %s)", pod.name, key)
                pod.terminate()
            state.remove_first = []
            self._publish(key)
        elif len(live) < state.desired and not state.deleted:
            now = time.monotonic()
            if now < state.hold_until:
                asyncio.get_running_loop().call_later(state.hold_until - now, self._wake.set)
                return
            for _ in range(state.desired - len(live)):
                self._start_pod(key, state)
            self._publish(key)
        if state.deleted and not state.pods:
            del self._revisions[key]

    @staticmethod
    def _victims(live: list[LocalPod], count: int, named: list[str]) -> list[LocalPod]:
        order = {name: i for i, name in enumerate(named)}

        def rank(pod: LocalPod) -> tuple[int, int, bool, float]:
            position = order.get(pod.name)
            return (
                0 if position is not None else 1,
                position or 0,
                pod.ready,
                -pod.created_monotonic,
            )

        return sorted(live, key=rank)[:count]

    def _start_pod(self, key: RevisionKey, state: _RevisionState) -> None:
        name = f"{key.name}-{''.join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))}"
        user, serving, admin, stats, metrics = self._ports.allocate_many(5)
        ports = PodPorts(user=user, serving=serving, admin=admin, stats=stats, metrics=metrics)
        pod = LocalPod(
            name=name,
            ports=ports,
            processes=state.spec.processes(name, ports),
            grace=state.spec.grace,
            launcher=self._launcher,
            prober=self._prober,
            settings=self._settings,
            on_change=lambda: self._publish(key),
        )
        state.pods[name] = pod
        task = asyncio.create_task(self._run_pod(key, state, pod), name=f"pod {name}")
        state.tasks[name] = task
        log.info("pod %s: starting (user port %d, queue-proxy port %d)", name, user, serving)

    async def _run_pod(self, key: RevisionKey, state: _RevisionState, pod: LocalPod) -> None:
        try:
            await pod.run()
        except Exception:
            log.exception("pod %s: supervision failed", pod.name)
            pod.failed = True
        finally:
            state.pods.pop(pod.name, None)
            state.tasks.pop(pod.name, None)
            self._ports.release(*pod.ports.all())
            if pod.failed and not pod.terminating and state.pod_failures is not None:
                delay = state.pod_failures.crashed(time.monotonic() - pod.created_monotonic)
                state.hold_until = time.monotonic() + delay
                state.last_failure = f"pod {pod.name} ended: {pod.last_exit}"
            self._publish(key)
            self._wake.set()

    def _publish(self, key: RevisionKey) -> None:
        state = self._revisions.get(key)
        if state is None or state.deleted:
            return
        live = sorted(
            (p for p in state.pods.values() if not p.terminating),
            key=lambda p: p.created_monotonic,
        )
        self._store.set_pods(key, tuple(p.to_platform() for p in live))
