"""Start a real `serving activator` process on free loopback ports, for integration tests and benchmarks.

    async with ActivatorProcess.start(platform_url=platform.url, autoscaler_url=stats.url) as activator:
        await session.get(activator.url, headers={"Host": "hello-00001.default.svc.cluster.local"})

`start` waits until the admin port's `/readyz` answers 200 (platform snapshot applied and autoscaler link up)
unless `wait_ready=False`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp

from tests.fakes.queueproxy import free_port

READY_TIMEOUT = 30.0
"""Seconds to wait for a starting process; generous because the test machine may be loaded."""


def command() -> list[str]:
    return [sys.executable, "-m", "controller.cli", "activator"]


@dataclass
class ActivatorProcess:
    process: asyncio.subprocess.Process
    env: dict[str, str]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @property
    def port(self) -> int:
        return int(self.env["ACTIVATOR_PORT"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.env['ACTIVATOR_ADMIN_PORT']}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_bytes(self) -> int:
        """Resident memory of the process now (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        *,
        platform_url: str,
        autoscaler_url: str,
        env: Mapping[str, str] | None = None,
        wait_ready: bool = True,
    ) -> AsyncIterator[ActivatorProcess]:
        """Run an activator; SIGTERM (then SIGKILL) when the block ends."""
        full_env = {
            "SERVING_PLATFORM_URL": platform_url,
            "AUTOSCALER_URL": autoscaler_url,
            "ACTIVATOR_BIND_ADDRESS": "127.0.0.1",
            "ACTIVATOR_PORT": str(free_port()),
            "ACTIVATOR_ADMIN_PORT": str(free_port()),
            "DRAIN_TIMEOUT": "0s",
            "LOG_FORMAT": "text",
            **(env or {}),
        }
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("ACTIVATOR_", "SERVING_"))}
        with tempfile.NamedTemporaryFile(prefix="activator-", suffix=".log", delete=False) as log:
            log_path = Path(log.name)
        log_file = log_path.open("wb")
        process = await asyncio.create_subprocess_exec(
            *command(), env={**keep, **full_env}, stdout=log_file, stderr=asyncio.subprocess.STDOUT
        )
        activator = cls(process, full_env, log_path, log_file)
        try:
            await activator.wait_started(wait_ready)
            yield activator
        finally:
            await activator.stop()
            log_file.close()
            os.unlink(log_path)

    async def ready(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(self.admin_url + "/readyz") as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError):
            return False

    async def metric(self, session: aiohttp.ClientSession, name: str, **labels: str) -> float:
        """One sample from the Prometheus exposition (0 when absent)."""
        async with session.get(self.admin_url + "/metrics") as response:
            text = await response.text()
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, rest = head.partition("{")
            if metric == name and ",".join(sorted(rest.rstrip("}").split(","))) == wanted:
                return float(value)
        return 0.0

    async def wait_started(self, wait_ready: bool) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise RuntimeError(f"activator exited with {self.process.returncode}:\n{self.logs()}")
                if wait_ready:
                    if await self.ready(session):
                        return
                else:
                    try:
                        async with session.get(self.admin_url + "/healthz") as response:
                            if response.status == 200:
                                return
                    except (aiohttp.ClientError, OSError):
                        pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"activator did not start within {READY_TIMEOUT}s:\n{self.logs()}")

    def terminate(self) -> None:
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
