"""The machine's floor for a cold start: N copies of an app started at the same instant, with no platform.
What the platform adds to a wake is its time to first 200 minus this floor, measured in the same run. An app
that runs from its image is started as N containers, by the runtime and with the flags `serving up` uses."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp

from bench.system import service
from controller.local.runtime.container import (
    ContainerProcess,
    ContainerRun,
    ContainerRuntime,
    container_name,
    sweep,
)
from controller.local.runtime.expansion import expand
from controller.local.runtime.podspec import USER_CONTAINER_NICE
from controller.local.runtime.port import PortAllocator
from controller.local.runtime.process import OsLauncher, Process, ProcessSpec, stop
from serving.container import DEFAULT_PORT

_RETRY: Final = 0.05
"""Seconds between attempts while the app's port refuses connections."""
_STOP_GRACE: Final = 5.0
"""Seconds the copies get to exit after SIGTERM before SIGKILL."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FloorRun:
    count: int
    times_ms: list[float | None]
    """Per copy, ms from the common start to its first 200 (None: not within the timeout)."""

    @property
    def answered(self) -> list[float]:
        return sorted(t for t in self.times_ms if t is not None)

    @property
    def slowest(self) -> float | None:
        """The last copy's time, or None if one never answered."""
        answered = self.answered
        return answered[-1] if answered and len(answered) == self.count else None


async def _first_200(session: aiohttp.ClientSession, port: int, t0: float, deadline: float) -> float | None:
    url = f"http://127.0.0.1:{port}/"
    while time.monotonic() < deadline:
        try:
            timeout = aiohttp.ClientTimeout(total=max(deadline - time.monotonic(), 0.01))
            async with session.get(url, timeout=timeout) as response:
                await response.read()
                if response.status == 200:
                    return (time.monotonic() - t0) * 1000
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        await asyncio.sleep(_RETRY)
    return None


async def run(
    app: service.App,
    count: int,
    session: aiohttp.ClientSession,
    within: float,
    log_dir: Path,
    runtime: ContainerRuntime | None = None,
) -> FloorRun:
    """Start `count` copies of `app` at once, each with its output in `log_dir`; every copy is stopped (its
    whole process group) before returning. An app that runs from its image needs `runtime` (`_containers`).

    Each copy is the Service's own command, started as a local pod's user container is (same launcher,
    niceness and environment, `$(PORT)` expanded) but with no queue-proxy, activator or controller around it;
    its time runs from the common start to its first 200, found by asking every 50 ms (Knative's aggressive
    readiness cadence) until the port takes the connection and then waiting for the answer.
    """
    if app.from_image:
        if runtime is None:
            raise ValueError(f"{app.image} runs from its image: its floor needs a container runtime")
        return await _containers(app, count, session, within, log_dir, runtime)
    ports = PortAllocator().allocate_many(count)  # as `serving up` picks its pods' ports
    launcher = OsLauncher()
    processes: list[Process] = []
    t0 = time.monotonic()
    try:
        for i, port in enumerate(ports, 1):
            container_env = {**app.env, "PORT": str(port)}  # what `$(VAR)` may name, as on a pod
            spec = ProcessSpec(
                argv=tuple(expand(arg, container_env) for arg in app.command),
                env=service.path_first({**os.environ, **container_env}),
                cwd=app.working_dir or Path.cwd(),
                log_path=log_dir / f"{count}-at-once-{i:02d}.log",
                nice=USER_CONTAINER_NICE,  # as a local pod's user container runs
            )
            processes.append(await launcher.start(spec))
        deadline = t0 + within
        times = await asyncio.gather(*(_first_200(session, port, t0, deadline) for port in ports))
    finally:
        await asyncio.gather(*(stop(p, _STOP_GRACE) for p in processes))
    return FloorRun(count=count, times_ms=list(times))


async def _containers(
    app: service.App,
    count: int,
    session: aiohttp.ClientSession,
    within: float,
    log_dir: Path,
    runtime: ContainerRuntime,
) -> FloorRun:
    """`count` containers of `app.image` started at once by the runtime's client in the foreground, as a
    local pod's user container is (`podman run --rm --init --pull never --publish 127.0.0.1:PORT:8080`, the
    host's ulimits, `PORT=8080`), each labelled with `log_dir`; all are removed before returning.

    The image must be present (nothing is pulled); the times run as for commands, from the common start."""
    ports = PortAllocator().allocate_many(count)
    launcher = OsLauncher()
    clients: list[Process] = []
    t0 = time.monotonic()
    try:
        for i, port in enumerate(ports, 1):
            copy = f"{count}-at-once-{i:02d}"
            run = ContainerRun(
                runtime=runtime,
                name=container_name(log_dir, f"floor-{copy}"),
                image=app.image,
                pull_policy="Never",
                state_dir=log_dir,
                host_port=port,
                container_port=DEFAULT_PORT,
                explicit_env=(*app.env.items(), ("PORT", str(DEFAULT_PORT))),
            )
            spec = ProcessSpec(
                argv=run.argv(), env=dict(os.environ), cwd=log_dir, log_path=log_dir / f"{copy}.log"
            )
            # Waiting for a client also removes its container.
            clients.append(ContainerProcess(await launcher.start(spec), run, set()))
        deadline = t0 + within
        times = await asyncio.gather(*(_first_200(session, port, t0, deadline) for port in ports))
    finally:
        await asyncio.gather(*(stop(c, _STOP_GRACE) for c in clients))
        await sweep(runtime, log_dir)  # any container a killed client left behind
    return FloorRun(count=count, times_ms=list(times))
