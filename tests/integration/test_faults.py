"""Hostile clients against `serving up`, counting every request sent and every answer."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from tests.integration.conftest import ServingUp, write_app_service

Start = Callable[..., Awaitable[ServingUp]]

SLOW_CLIENTS = 1000
HEADER_READ_TIMEOUT = 10.0
"""The engine's default: a request head must arrive whole within this long once it has started."""


def _enough_files(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 512
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


async def test_a_thousand_slow_clients_do_not_stop_the_router_serving_others(
    serving_up: Start, tmp_path: Path
) -> None:
    """1,000 connections each sending its request head one byte a second (slowloris): every other client is
    served meanwhile, and the router closes each slow connection once its head has taken longer than the
    header read timeout, without forwarding anything for it."""
    _enough_files(SLOW_CLIENTS)
    up = await serving_up([write_app_service(tmp_path, "hello")])
    assert (await up.get("hello"))[0] == 200  # warm: a pod is up

    slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(SLOW_CLIENTS):
        reader, writer = await asyncio.open_connection("127.0.0.1", up.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: hello.default.localhost\r\n")
        slow.append((reader, writer))
    opened = time.monotonic()
    closed_after: list[float] = []
    answered: list[bytes] = []

    async def watch(reader: asyncio.StreamReader) -> None:
        data = await reader.read(65536)  # b"" when the router closes the connection
        if data:
            answered.append(data[:40])
        closed_after.append(time.monotonic() - opened)

    watchers = [asyncio.create_task(watch(reader)) for reader, _ in slow]

    async def drip() -> None:
        while not all(w.done() for w in watchers):
            for (_, writer), watcher in zip(slow, watchers, strict=True):
                if not watcher.done():
                    writer.write(b"X")
            await asyncio.sleep(1)

    dripper = asyncio.create_task(drip())
    statuses: list[int] = []
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        deadline = opened + HEADER_READ_TIMEOUT + 2
        while time.monotonic() < deadline:
            started = time.monotonic()
            async with session.get(up.url("/"), headers={"Host": up.host("hello")}) as response:
                await response.read()
                statuses.append(response.status)
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.1)
    try:
        await asyncio.wait_for(asyncio.gather(*watchers), HEADER_READ_TIMEOUT + 20)
    finally:
        dripper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dripper
        for _, writer in slow:
            writer.close()

    print(
        f"{SLOW_CLIENTS} slow clients: all closed after {min(closed_after):.1f}-{max(closed_after):.1f}s; "
        f"{len(statuses)} ordinary requests meanwhile, median {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms"
    )
    assert statuses == [200] * len(statuses)
    assert len(statuses) >= 20
    assert answered == [], "nothing may be forwarded for a head that never completed"
    assert len(closed_after) == SLOW_CLIENTS
    assert min(closed_after) >= HEADER_READ_TIMEOUT - 1
    assert max(closed_after) <= HEADER_READ_TIMEOUT + 15
    assert await up.stop() == 0
