"""The machine's floor for a cold start: N copies of an app started at the same instant, with no platform.

Each copy is the Service's own command, run directly on a free port with the Service's environment; the time
of each is from the common start to its first 200, found by asking every 50 ms (Knative's aggressive
readiness cadence) until the port takes the connection and then waiting for the answer. What the platform
adds to a wake is its time to first 200 minus this floor, measured on the same machine in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass
from typing import Final

import aiohttp

from controller.bench import services
from controller.expansion import expand
from controller.port import PortAllocator

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


async def run(app: services.App, count: int, session: aiohttp.ClientSession, within: float) -> FloorRun:
    """Start `count` copies of `app` at once; every copy is stopped (with its children) before returning."""
    ports = PortAllocator().allocate_many(count)  # as `serving up` picks its pods' ports
    processes: list[asyncio.subprocess.Process] = []
    t0 = time.monotonic()
    try:
        for port in ports:
            container_env = {**app.env, "PORT": str(port)}  # what `$(VAR)` may name, as on a pod
            argv = [expand(arg, container_env) for arg in app.command]
            processes.append(
                await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=app.working_dir,
                    env={**os.environ, **container_env},
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                    start_new_session=True,  # its own process group, so that its workers stop with it
                )
            )
        deadline = t0 + within
        times = await asyncio.gather(*(_first_200(session, port, t0, deadline) for port in ports))
    finally:
        await _stop(processes)
    return FloorRun(count=count, times_ms=list(times))


async def _stop(processes: list[asyncio.subprocess.Process]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for process in processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
        waits = [asyncio.wait_for(p.wait(), _STOP_GRACE) for p in processes if p.returncode is None]
        results = await asyncio.gather(*waits, return_exceptions=True)
        if not any(isinstance(r, TimeoutError) for r in results):
            return
