"""Local child processes: each in its own process group, output appended to a log file.

A child gets its own session so that Ctrl-C in the terminal reaches only `serving up`, which then stops its
children in order; signals go to the whole group so that an app's own workers (gunicorn's, say) go too. On
Linux a child also asks the kernel to send it SIGKILL if `serving up` dies without cleaning up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from controller.local.runtime.container import ContainerRun

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1

EXIT_UNKNOWN: Final = 256
"""The code of a child whose exit status no one could read (only its parent can, and the fork server that
was its parent is gone); real codes are 0-255, or -N for death by signal N."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessSpec:
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    """The whole environment of the child."""
    cwd: Path
    log_path: Path
    """stdout and stderr are appended here."""
    nice: int = 0
    """Added to the child's niceness before it runs (a lower scheduling priority); 0 keeps the parent's."""
    container: ContainerRun | None = None
    """Set when `argv` is a container runtime's client running this container (`ContainerLauncher`)."""


class Process(Protocol):
    """A started child process (its group)."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    async def wait(self) -> int: ...
    def signal(self, sig: int) -> None:
        """Send `sig` to the child's process group; no-op once the group is gone."""
        ...


class Launcher(Protocol):
    async def start(self, spec: ProcessSpec) -> Process:
        """Start a child; an error starting it (no such command) raises OSError."""
        ...


def die_with_parent() -> None:
    """Ask the kernel for SIGKILL when the parent dies; runs in a child after fork (before exec, if any)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _child_setup(nice: int) -> None:
    """In the child before exec: death with the parent, then the lower priority asked for."""
    die_with_parent()
    if nice:
        os.nice(nice)


class OsProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def wait(self) -> int:
        return await self._proc.wait()

    def signal(self, sig: int) -> None:
        # The group outlives its leader while any member (a forked worker) is alive.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)


class OsLauncher:
    async def start(self, spec: ProcessSpec) -> Process:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_path.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *spec.argv,
                env=spec.env,
                cwd=spec.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=partial(_child_setup, spec.nice),
            )
        return OsProcess(proc)


async def stop(process: Process, grace: float, sig: int = signal.SIGTERM) -> int:
    """Send `sig` to the group, wait up to `grace` seconds, then SIGKILL it; returns the exit code.

    The group gets SIGKILL even after the leader exited in time, so that no stray worker survives it.
    """
    process.signal(sig)
    try:
        code = await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        log.warning("process %d did not exit %.1fs after signal %d; killing it", process.pid, grace, sig)
        process.signal(signal.SIGKILL)
        code = await process.wait()
    process.signal(signal.SIGKILL)
    return code


def describe_exit(code: int) -> str:
    """`exit code 3` or `killed by SIGKILL` (asyncio reports death by signal N as -N)."""
    if code == EXIT_UNKNOWN:
        return "exited (status unknown)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
