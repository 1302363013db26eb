"""Start a real `serving queue-proxy` process on free loopback ports, for integration tests of any component.

    async with QueueProxyProcess.start(user_port=app.port, env={"CONTAINER_CONCURRENCY": "1"}) as qp:
        await session.get(qp.url + "/echo")

`start` waits until the main port answers; with `wait_ready=True` (the default) until the queue-proxy's own
readiness check passes, which needs the app to listen.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

from tests.fakes.process import ComponentProcess, free_ports

PROBE_HEADERS = {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"}


def base_env(user_port: int) -> dict[str, str]:
    """A complete, valid queue-proxy environment on free ports; tests override single variables."""
    serving, admin, stats, metrics = free_ports(4)
    return {
        "SERVING_NAMESPACE": "default",
        "SERVING_CONFIGURATION": "hello",
        "SERVING_REVISION": "hello-00001",
        "SERVING_POD": "hello-00001-deployment-abc12",
        "SERVING_POD_IP": "127.0.0.1",
        "SERVING_SERVICE": "hello",
        "USER_PORT": str(user_port),
        "QUEUE_BIND_ADDRESS": "127.0.0.1",
        "QUEUE_SERVING_PORT": str(serving),
        "QUEUE_ADMIN_PORT": str(admin),
        "QUEUE_STATS_PORT": str(stats),
        "QUEUE_METRICS_PORT": str(metrics),
        # Short drains keep test teardown quick; drain tests set their own.
        "DRAIN_QUIET_PERIOD": "100ms",
        "DRAIN_WEBSOCKET_TIMEOUT": "1s",
    }


def command() -> list[str]:
    return [sys.executable, "-m", "controller.cli", "queue-proxy"]


def process_env(env: Mapping[str, str]) -> dict[str, str]:
    """The child's environment: ours minus any inherited queue-proxy variables, plus `env`."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("SERVING_", "QUEUE_", "REVISION_"))}
    keep.update(env)
    return keep


@dataclass
class QueueProxyProcess(ComponentProcess):
    name = "queue-proxy"

    @property
    def port(self) -> int:
        return int(self.env["QUEUE_SERVING_PORT"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.env['QUEUE_STATS_PORT']}/metrics"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.env['QUEUE_METRICS_PORT']}/metrics"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.env['QUEUE_ADMIN_PORT']}"

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        *,
        user_port: int,
        env: Mapping[str, str] | None = None,
        wait_ready: bool = True,
    ) -> AsyncIterator[QueueProxyProcess]:
        """Run a queue-proxy in front of 127.0.0.1:`user_port`; SIGTERM (then SIGKILL) when the block ends."""
        full_env = base_env(user_port)
        full_env.update(env or {})
        async with cls.spawn(command(), full_env, process_env(full_env)) as qp:
            await qp.wait_started(wait_ready)
            yield qp

    async def wait_started(self, wait_ready: bool) -> None:
        await self.wait_until(self._ready if wait_ready else self._listening)

    async def _ready(self, session: aiohttp.ClientSession) -> bool:
        async with session.get(
            self.url, headers=PROBE_HEADERS, timeout=aiohttp.ClientTimeout(total=15)
        ) as response:
            return response.status == 200

    async def _listening(self, session: aiohttp.ClientSession) -> bool:
        async with session.get(self.stats_url) as response:
            if response.status != 200:
                return False
        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.close()
        await writer.wait_closed()
        return True
