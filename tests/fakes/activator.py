"""Start a real `serving activator` process on free loopback ports, for integration tests and benchmarks.

    async with ActivatorProcess.start(platform_url=platform.url, autoscaler_url=stats.url) as activator:
        await session.get(activator.url, headers={"Host": "hello-00001.default.svc.cluster.local"})

`start` waits until the admin port's `/readyz` answers 200 (platform snapshot applied and autoscaler link up)
unless `wait_ready=False`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.fakes.process import ComponentProcess, free_port


def command() -> list[str]:
    return [sys.executable, "-m", "controller.cli", "activator"]


@dataclass
class ActivatorProcess(ComponentProcess):
    name = "activator"

    @property
    def port(self) -> int:
        return int(self.env["ACTIVATOR_PORT"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.env['ACTIVATOR_ADMIN_PORT']}"

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
        async with cls.spawn(command(), full_env, {**keep, **full_env}) as activator:
            await activator.wait_started(wait_ready)
            yield activator

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
        await self.wait_until(self.ready if wait_ready else self._healthy)

    async def _healthy(self, session: aiohttp.ClientSession) -> bool:
        async with session.get(self.admin_url + "/healthz") as response:
            return response.status == 200
