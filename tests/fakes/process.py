"""A real `serving <component>` subprocess on free loopback ports: log file, start-up wait, SIGTERM at end.

`tests.fakes.activator` and `tests.fakes.queueproxy` build on it; each adds its environment, URLs and the
check that says the component has started.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, ClassVar, TypeVar

import aiohttp

READY_TIMEOUT = 30.0
"""Seconds to wait for a starting process; generous because the test machine may be loaded."""

P = TypeVar("P", bound="ComponentProcess")


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that were free a moment ago: each socket stays bound until all are picked, so
    the kernel cannot hand the same port out twice (as separate `free_port()` calls may)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """A port that was free a moment ago (the kernel picks it); good enough on a test machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ComponentProcess:
    """One running component; `env` holds the variables the test chose (ports included)."""

    name: ClassVar[str] = "component"
    """How errors name the process (`queue-proxy`, `activator`)."""

    process: asyncio.subprocess.Process
    env: dict[str, str]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    @classmethod
    @asynccontextmanager
    async def spawn(
        cls: type[P], command: list[str], env: Mapping[str, str], child_env: Mapping[str, str]
    ) -> AsyncIterator[P]:
        """Start `command` with `child_env`, output to a temporary log; SIGTERM (then SIGKILL) at the end."""
        with tempfile.NamedTemporaryFile(prefix=f"{cls.name}-", suffix=".log", delete=False) as log:
            log_path = Path(log.name)
        log_file = log_path.open("wb")
        process = await asyncio.create_subprocess_exec(
            *command, env=dict(child_env), stdout=log_file, stderr=asyncio.subprocess.STDOUT
        )
        started = cls(process, dict(env), log_path, log_file)
        try:
            yield started
        finally:
            await started.stop()
            log_file.close()
            os.unlink(log_path)

    async def wait_until(self, started: Callable[[aiohttp.ClientSession], Awaitable[bool]]) -> None:
        """Poll `started` until it says yes; fail early with the logs if the process exits first."""
        deadline = time.monotonic() + READY_TIMEOUT
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.logs()}")
                try:
                    if await started(session):
                        return
                except (aiohttp.ClientError, OSError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name} did not start within {READY_TIMEOUT}s:\n{self.logs()}")

    def terminate(self) -> None:
        """Send SIGTERM (start the drain) without waiting."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 60.0) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit within `timeout`."""
        self.terminate()
        try:
            return await self.wait(timeout)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()


def processes_with_env(name: str, value: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live (not zombie) process whose environment has `name`=`value`."""
    needle = f"{name}={value}".encode()
    found: list[tuple[int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if "\nState:\tZ" in (entry / "status").read_text():
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found.append((int(entry.name), cmdline.strip()))
    return found
