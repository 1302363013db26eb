"""ContainerSources on the local platform: each one's container runs supervised (restarted with back-off when
it exits, as a Deployment's pod is) with `K_SINK` and `K_CE_OVERRIDES` in its environment, as Knative's
ContainerSource binds them; a change of the source or of its sink restarts it. It runs as a process (its
`command`), or from its image in the container runtime when it has none, as a Service's container does."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.local.runtime.backoff import BackoffPolicy, CrashCounter
from controller.local.runtime.container import (
    PROCESS,
    ContainerRun,
    ContainerRuntime,
    container_name,
    source_runs_as_container,
)
from controller.local.runtime.expansion import expand
from controller.local.runtime.podspec import client_env, resource_limits
from controller.local.runtime.process import Launcher, Process, ProcessSpec, describe_exit, stop
from controller.local.runtime.volume import VolumeSet
from serving.configdata import ConfigData
from serving.envsource import EnvSourceError, resolve_env
from serving.events import ContainerSource

log = logging.getLogger(__name__)

GRACE = 5.0
"""Seconds a stopping source gets between SIGTERM and SIGKILL."""

Configs = Callable[[str, str, str], ConfigData | None]


@dataclass(frozen=True, slots=True)
class SourceRun:
    """One ContainerSource as it should run: the object and the binding variables of its resolved sink."""

    source: ContainerSource
    binding: Mapping[str, str]
    template: str
    """`spec.template` as JSON: a change of anything in it (env, args) restarts the source."""


@dataclass(slots=True)
class _Running:
    run: SourceRun
    task: asyncio.Task[None]
    state: dict[str, object]


class ContainerSources:
    def __init__(
        self,
        launcher: Launcher,
        log_dir: Path,
        host_env: Mapping[str, str],
        configs: Configs,
        *,
        runtime_choice: str = PROCESS,
        container_runtime: Callable[[], ContainerRuntime | None] = lambda: None,
        state_dir: Path | None = None,
        volumes: VolumeSet | None = None,
    ) -> None:
        self._launcher = launcher
        self._log_dir = log_dir
        self._host_env = dict(host_env)
        self._configs = configs
        self._runtime_choice = runtime_choice
        self._container_runtime = container_runtime
        """The platform's container runtime once one was found (sources that run from their images)."""
        self._state_dir = state_dir
        self._volumes = volumes
        """Where the volumes of sources run from their images are written (the pods' set: a ConfigMap or
        Secret change rewrites them in place, as it does a pod's)."""
        self._running: dict[tuple[str, str], _Running] = {}

    async def set(self, runs: list[SourceRun]) -> list[str]:
        """Run exactly `runs` (new ones start, changed ones restart, removed ones stop); a line per change."""
        wanted = {(r.source.namespace, r.source.name): r for r in runs}
        lines: list[str] = []
        for key in list(self._running):
            current = self._running[key]
            if wanted.get(key) != current.run:
                await self._stop(key)
                if key not in wanted:
                    lines.append(f"ContainerSource {key[0]}/{key[1]} stopped")
        for key, run in wanted.items():
            if key not in self._running:
                state: dict[str, object] = {"pid": None, "restarts": 0, "reason": ""}
                task = asyncio.create_task(self._supervise(run, state), name=f"source {key[0]}/{key[1]}")
                self._running[key] = _Running(run, task, state)
                lines.append(f"ContainerSource {key[0]}/{key[1]} started, sending to {run.binding['K_SINK']}")
        return lines

    def status(self, namespace: str, name: str) -> dict[str, object] | None:
        running = self._running.get((namespace, name))
        return None if running is None else dict(running.state)

    async def close(self) -> None:
        for key in list(self._running):
            await self._stop(key)

    async def _stop(self, key: tuple[str, str]) -> None:
        running = self._running.pop(key)
        running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)
        if self._volumes is not None:
            self._volumes.release(_volume_key(*key))

    def _spec(self, run: SourceRun) -> ProcessSpec:
        source = run.source
        container = source.container
        raw = source.template.get("spec", {}).get("containers", [{}])[container.index]
        env = resolve_env(raw, source.namespace, self._configs).variables(expand)
        env.update(run.binding)
        log_path = self._log_dir / source.namespace / "sources" / source.name / f"{container.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if source_runs_as_container(source, self._runtime_choice):
            return self._container_spec(source, raw, env, log_path)
        argv = tuple(expand(part, env) for part in (*container.command, *container.args))
        cwd = source.base_dir / container.working_dir if container.working_dir else source.base_dir
        return ProcessSpec(argv=argv, env={**self._host_env, **env}, cwd=cwd, log_path=log_path)

    def _container_spec(
        self, source: ContainerSource, raw: Mapping[str, Any], env: dict[str, str], log_path: Path
    ) -> ProcessSpec:
        """The source's container run from its image, on the host's network: `K_SINK` names the Broker or
        Service on loopback, which a container of its own network could not reach. Variables travel in the
        runtime client's environment (an env file for those the client reads itself), never on its command
        line."""
        runtime = self._container_runtime()
        if runtime is None or self._state_dir is None:
            raise OSError("no container runtime was found to run its image")
        container = source.container
        assert container.image is not None
        client = client_env(env, log_path.parent / f"..env-{container.index}", self._host_env)
        cpus, memory = resource_limits(raw)
        key = _volume_key(source.namespace, source.name)
        volumes = source.template.get("spec", {}).get("volumes") or ()
        mounts: tuple[str, ...] = ()
        if volumes:
            if self._volumes is None:
                raise OSError("there is no folder for its volumes (no state folder)")
            mounts = self._volumes.for_pod(key, volumes, source.namespace).prepare(
                self._configs, raw.get("volumeMounts") or ()
            )
        run = ContainerRun(
            runtime=runtime,
            name=container_name(self._state_dir, key),
            image=container.image,
            pull_policy=str(raw.get("imagePullPolicy") or "IfNotPresent"),
            state_dir=self._state_dir,
            host_port=0,
            container_port=0,
            host_network=True,
            env_names=client.names,
            env_file=client.env_file,
            command=tuple(expand(part, env) for part in container.command),
            args=tuple(expand(part, env) for part in container.args),
            working_dir=container.working_dir,
            cpus=cpus,
            memory=memory,
            mounts=mounts,
            labels=(("sources.knative.dev/containerSource", source.name),),
        )
        return ProcessSpec(
            argv=run.argv(),
            env=client.env,
            cwd=log_path.parent,
            log_path=log_path,
            container=run,
        )

    async def _supervise(self, run: SourceRun, state: dict[str, object]) -> None:
        crashes = CrashCounter(BackoffPolicy())
        name = f"{run.source.namespace}/{run.source.name}"
        while True:
            started = time.monotonic()
            process: Process | None = None
            try:
                process = await self._launcher.start(self._spec(run))
                state.update(pid=process.pid, reason="")
                code = await process.wait()
                state["reason"] = f"exited ({describe_exit(code)})"
            except EnvSourceError as exc:  # a ConfigMap or Secret it reads is missing: the kubelet's reason
                state["reason"] = f"CreateContainerConfigError: {exc}"
            except OSError as exc:
                state["reason"] = f"cannot start: {exc}"
            except asyncio.CancelledError:
                if process is not None and process.returncode is None:
                    await stop(process, GRACE)
                raise
            except Exception as exc:  # the supervisor's boundary: log, and start again after the back-off
                log.exception("ContainerSource %s: supervising it failed", name)
                state["reason"] = f"failed: {exc!r}"
                if process is not None and process.returncode is None:
                    await stop(process, GRACE)
            state["pid"] = None
            delay = crashes.crashed(time.monotonic() - started)
            state["restarts"] = crashes.restarts
            log.warning("ContainerSource %s: %s; restarting in %gs", name, state["reason"], delay)
            await asyncio.sleep(delay)


def _volume_key(namespace: str, name: str) -> str:
    """A source's name among the pods' for its container and its volumes' folder."""
    return f"source-{namespace}-{name}"
