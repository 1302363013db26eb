"""`serving autoscaler` as a real process: it watches a (fake, real-HTTP) platform, scrapes (fake, real-HTTP)
pod stats endpoints, scales a revision up under load and to zero when idle, and exits cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from serving.autoscaling import PREFIX
from serving.platform import Revision, RevisionKey
from serving.stat import Stat
from tests.fakes.platform import FakePlatform
from tests.fakes.process import free_port
from tests.fakes.statfleet import FakeStatFleet

KEY = RevisionKey("default", "hello-00001")
WAIT = 60.0
"""Generous: the machine may be loaded."""


def read(path: Path) -> str:
    return path.read_text(errors="replace")


async def eventually(condition: Callable[[], bool], what: str, log: Path, timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; autoscaler log:\n{read(log)}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def platform() -> AsyncIterator[FakePlatform]:
    fake = FakePlatform()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def fleet() -> AsyncIterator[FakeStatFleet]:
    fake = FakeStatFleet()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_scales_up_under_load_then_to_zero_when_idle(
    platform: FakePlatform, fleet: FakeStatFleet
) -> None:
    (pod,) = await fleet.start(1, concurrency=210.0)  # three pods' worth at the default target of 70
    annotations = {PREFIX + "window": "6s"}
    await platform.put(
        Revision(key=KEY, service="hello", configuration="hello", annotations=annotations, pods=(pod.pod(),))
    )
    port = free_port()
    env = {
        **{
            k: v for k, v in os.environ.items() if not k.startswith(("AUTOSCALER_", "SERVING_", "ACTIVATOR_"))
        },
        "SERVING_PLATFORM_URL": platform.url,
        "AUTOSCALER_PORT": str(port),
        "AUTOSCALER_BIND_ADDRESS": "127.0.0.1",
        "AUTOSCALER_CONFIG": "scale-to-zero-grace-period=2s",
        "LOG_FORMAT": "text",
    }
    with tempfile.NamedTemporaryFile(prefix="autoscaler-", suffix=".log", delete=False) as handle:
        log = Path(handle.name)
    with open(log, "wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "controller.cli", "autoscaler", env=env, stdout=out, stderr=out
        )
        try:
            await eventually(lambda: any(n >= 3 for _, n, _ in platform.scale_calls), "a scale-up", log)
            assert platform.scale_calls[0][0] == KEY
            # The status is published by its own request, which may arrive after the scale call.
            await eventually(lambda: KEY in platform.statuses, "a status report", log)
            status = platform.statuses[KEY]
            assert status.stable_concurrency > 0

            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    text = await resp.text()
                assert (
                    'autoscaler_ready_pods{namespace_name="default",revision_name="hello-00001"} 1.0' in text
                )
                async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    assert resp.status == 200

            # The load stops: after the panic hold, a stable window of zeros and the active window, zero.
            pod.stat = Stat(pod_name=pod.name)
            await eventually(lambda: platform.scale_calls[-1][1] == 0, "a scale to zero", log)
            assert platform.scale_calls[-1] == (KEY, 0, [pod.name])
            await eventually(lambda: platform.statuses[KEY].desired_pods == 0, "status desired 0", log)
            assert platform.statuses[KEY].mode == "Proxy"
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), 30)
    output = read(log)
    os.unlink(log)
    assert code == 0, output
    assert "Traceback" not in output
