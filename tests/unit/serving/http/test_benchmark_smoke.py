"""A short smoke run of the engine benchmark's processes, so the benchmark keeps working (wrk not needed)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from tests.fakes.process import free_port

SCRIPT = Path(__file__).resolve().parents[4] / "benchmarks" / "engine_forwarder.py"


async def get_when_up(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    for _ in range(300):
        try:
            async with session.get(url) as response:
                return response.status, await response.text()
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never answered")


async def test_benchmark_forwarders_relay_the_app() -> None:
    app_port = free_port()
    upstream = ["--upstream-port", str(app_port)]
    roles = [
        ("app", app_port, []),
        *((role, free_port(), upstream) for role in ("forwarder", "minimal", "router", "router-task")),
    ]
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(SCRIPT), "--role", role, "--port", str(port), *extra
        )
        for role, port, extra in roles
    ]
    try:
        async with aiohttp.ClientSession() as session:
            for _, port, _ in roles:
                for _ in range(3):
                    assert await get_when_up(session, f"http://127.0.0.1:{port}/") == (200, "Hello World!\n")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            await asyncio.wait_for(process.wait(), 10)
