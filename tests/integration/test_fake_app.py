"""`python -m tests.fakes.app` as a real process under uvloop: the benchmarks' upstream must serve every
endpoint, not only `--hello-only`."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
"""Seconds to wait for `listening on PORT`; generous for a loaded 2-core machine."""


@contextlib.asynccontextmanager
async def fake_app_process(*args: str) -> AsyncIterator[str]:
    """Start the fake app on a free loopback port; yields its base URL; SIGTERM (then SIGKILL) at the end."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.app",
        "--port",
        "0",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
        if not line.startswith(b"listening on "):
            assert process.stderr is not None
            await asyncio.wait_for(process.wait(), START_TIMEOUT)
            errors = await process.stderr.read()
            pytest.fail(f"the fake app did not start (exit {process.returncode}):\n{errors.decode()}")
        yield f"http://127.0.0.1:{int(line.split()[-1])}"
        assert process.returncode is None, "the fake app exited while serving"
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10.0)
            except TimeoutError:
                process.kill()
                await process.wait()


async def test_fake_app_process_serves_every_kind_of_endpoint() -> None:
    timeout = aiohttp.ClientTimeout(total=10.0)
    async with fake_app_process() as url, aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(f"{url}/echo?x=1", data=b"ping") as resp:
            assert (resp.status, await resp.read()) == (200, b"ping")
            assert (resp.headers["x-echo-method"], resp.headers["x-echo-target"]) == ("POST", "/echo?x=1")
        async with session.get(f"{url}/sleep", params={"ms": "10"}) as resp:
            assert (resp.status, await resp.text()) == (200, "slept 10 ms")
        async with session.get(
            f"{url}/stream", params={"chunks": "3", "size": "2", "interval_ms": "1"}
        ) as resp:
            assert await resp.read() == b"aabbcc"
        async with session.get(f"{url}/status/418") as resp:
            assert resp.status == 418
        async with session.get(f"{url}/state") as resp:
            # /echo, /sleep, /stream and /status were counted, one at a time; /state itself is not.
            assert await resp.json() == {"requests": 4, "active": 0, "max_active": 1}
        async with session.ws_connect(f"{url}/ws") as ws:
            await ws.send_str("hello")
            assert (await ws.receive(timeout=5.0)).data == "hello"


async def test_fake_app_process_hello_only() -> None:
    async with (
        fake_app_process("--hello-only") as url,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10.0)) as session,
        session.get(f"{url}/") as resp,
    ):
        assert (resp.status, await resp.text()) == (200, "hello world")
