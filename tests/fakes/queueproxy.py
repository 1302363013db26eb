"""Start a real `serving queue-proxy` process on free loopback ports, for integration tests of any component.

    async with QueueProxyProcess.start(user_port=app.port, env={"CONTAINER_CONCURRENCY": "1"}) as qp:
        await session.get(qp.url + "/echo")

`start` waits until the main port answers; with `wait_ready=True` (the default) until the queue-proxy's own
readiness check passes, which needs the app to listen.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp

READY_TIMEOUT = 30.0
"""Seconds to wait for a starting process; generous because the test machine may be loaded."""

PROBE_HEADERS = {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"}


def free_port() -> int:
    """A port that was free a moment ago (the kernel picks it); good enough on a test machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def base_env(user_port: int) -> dict[str, str]:
    """A complete, valid queue-proxy environment on free ports; tests override single variables."""
    return {
        "SERVING_NAMESPACE": "default",
        "SERVING_CONFIGURATION": "hello",
        "SERVING_REVISION": "hello-00001",
        "SERVING_POD": "hello-00001-deployment-abc12",
        "SERVING_POD_IP": "127.0.0.1",
        "SERVING_SERVICE": "hello",
        "USER_PORT": str(user_port),
        "QUEUE_BIND_ADDRESS": "127.0.0.1",
        "QUEUE_SERVING_PORT": str(free_port()),
        "QUEUE_ADMIN_PORT": str(free_port()),
        "QUEUE_STATS_PORT": str(free_port()),
        "QUEUE_METRICS_PORT": str(free_port()),
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
class QueueProxyProcess:
    process: asyncio.subprocess.Process
    env: dict[str, str]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

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

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

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
        with tempfile.NamedTemporaryFile(prefix="queue-proxy-", suffix=".log", delete=False) as log:
            log_path = Path(log.name)
        log_file = log_path.open("wb")
        process = await asyncio.create_subprocess_exec(
            *command(), env=process_env(full_env), stdout=log_file, stderr=asyncio.subprocess.STDOUT
        )
        qp = cls(process, full_env, log_path, log_file)
        try:
            await qp.wait_started(wait_ready)
            yield qp
        finally:
            await qp.stop()
            log_file.close()
            os.unlink(log_path)

    async def wait_started(self, wait_ready: bool) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise RuntimeError(f"queue-proxy exited with {self.process.returncode}:\n{self.logs()}")
                try:
                    if wait_ready:
                        async with session.get(
                            self.url, headers=PROBE_HEADERS, timeout=aiohttp.ClientTimeout(total=15)
                        ) as response:
                            if response.status == 200:
                                return
                    else:
                        async with session.get(self.stats_url) as response:
                            if response.status == 200:
                                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                                writer.close()
                                await writer.wait_closed()
                                return
                except (aiohttp.ClientError, OSError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"queue-proxy did not start within {READY_TIMEOUT}s:\n{self.logs()}")

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
