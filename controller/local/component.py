"""The activator and the autoscaler as supervised child processes of `serving up`.

Each runs as `serving <component>` (through this interpreter) with its environment, logs under the state
dir, a readiness URL polled until it answers 200, and a restart with back-off if it dies, so a crash of one
component heals without restarting the whole system.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from controller.local.runtime.backoff import BackoffPolicy, CrashCounter
from controller.local.runtime.process import Launcher, Process, ProcessSpec, describe_exit, stop

log = logging.getLogger(__name__)

_READY_POLL = 0.1
"""Seconds between readiness polls while waiting for a component to come up."""


class ComponentFailed(Exception):
    """A component did not become ready in time (or could not start)."""


class Component:
    def __init__(
        self,
        name: str,
        *,
        env: Mapping[str, str],
        ready_url: str,
        log_path: Path,
        launcher: Launcher,
        session: aiohttp.ClientSession,
        backoff: BackoffPolicy | None = None,
    ) -> None:
        self.name = name
        self.ready_url = ready_url
        self.log_path = log_path
        self._spec = ProcessSpec(
            argv=(sys.executable, "-m", "controller.cli", name),
            env=dict(env),
            cwd=log_path.parent,
            log_path=log_path,
        )
        self._launcher = launcher
        self._session = session
        self._crashes = CrashCounter(backoff or BackoffPolicy())
        self._process: Process | None = None
        self._started = 0.0
        self._stopping = False
        self.restarts = 0
        self.last_exit: str | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        self._started = time.monotonic()
        self._process = await self._launcher.start(self._spec)
        log.info("%s started (pid %d), log %s", self.name, self._process.pid, self.log_path)

    async def ready(self) -> bool:
        try:
            async with self._session.get(self.ready_url, timeout=aiohttp.ClientTimeout(total=1.0)) as resp:
                await resp.read()
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def wait_ready(self, limit: float) -> None:
        """Poll readiness until it answers 200; `ComponentFailed` after `limit` seconds or if it exits."""
        deadline = time.monotonic() + limit
        while not await self.ready():
            process = self._process
            if process is not None and process.returncode is not None:
                raise ComponentFailed(
                    f"{self.name} exited ({describe_exit(process.returncode)}) while starting; "
                    f"see {self.log_path}:\n{_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise ComponentFailed(
                    f"{self.name} was not ready after {limit:g}s ({self.ready_url}); "
                    f"see {self.log_path}:\n{_tail(self.log_path)}"
                )
            await asyncio.sleep(_READY_POLL)

    async def run(self) -> None:
        """Restart the component whenever it exits unexpectedly; runs until cancelled."""
        while True:
            if self._process is None:
                await self.start()
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping:
                return
            self._process.signal(signal.SIGKILL)
            self.last_exit = describe_exit(code)
            delay = self._crashes.crashed(time.monotonic() - self._started)
            self.restarts = self._crashes.restarts
            log.error("%s %s; restarting in %gs (see %s)", self.name, self.last_exit, delay, self.log_path)
            await asyncio.sleep(delay)
            self._process = None

    async def stop(self, grace: float) -> None:
        self._stopping = True
        if self._process is not None and self._process.returncode is None:
            await stop(self._process, grace)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "  (no log)"
    return "\n".join(f"  {line}" for line in text.splitlines()[-lines:])
