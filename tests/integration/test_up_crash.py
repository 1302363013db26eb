"""A user process killed with SIGKILL under load: only requests it was serving fail, the pod comes back."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.integration.conftest import Load, ServingUp, eventually, write_app_service

Start = Callable[..., Awaitable[ServingUp]]


async def test_killed_app_fails_only_its_in_flight_requests_and_restarts(
    serving_up: Start, tmp_path: Path
) -> None:
    yaml = write_app_service(
        tmp_path,
        "crashy",
        annotations={
            "autoscaling.knative.dev/min-scale": "2",
            "autoscaling.knative.dev/target-burst-capacity": "0",
        },
    )
    up = await serving_up([yaml])
    name = "crashy-00001"
    await up.wait_revision(
        name, lambda r: r["ready_pods"] == 2 and r["mode"] == "Serve", 40, "two ready pods in Serve mode"
    )
    workers = 6
    load = Load(up.url("/?ms=300"), up.host("crashy"), workers=workers)
    load.start()
    try:

        async def both_pods_busy() -> bool:
            return len({body.split()[-1] for _, _, status, body in load.results if status == 200}) == 2

        await eventually(both_pods_busy, 20, "the load did not reach both pods")
        victim = int(load.results[-1][3].split()[-1])
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        await up.wait_revision(
            name,
            lambda r: r["ready_pods"] == 2 and any(p["restarts"] == 1 for p in r["pods"]),
            30,
            "the crashed pod did not come back",
        )
        await asyncio.sleep(1.0)
    finally:
        await load.stop()

    failed = load.failures()
    assert len(failed) <= workers, f"more failures than requests in flight: {failed}"
    # The supervisor sees the exit within milliseconds; allow for a loaded machine.
    settled = killed_at + 0.5
    assert all(start < settled for start, _, _, _ in failed), (
        f"a request sent after the kill failed: {failed}"
    )
    after = [r for r in load.results if r[0] > settled]
    assert len(after) > 10
    assert all(status == 200 for _, _, status, _ in after)
    pids = {body.split()[-1] for _, _, status, body in after if status == 200}
    assert str(victim) not in pids
    rev = await up.revision(name)
    assert rev is not None
    restarted = [p for p in rev["pods"] if p["restarts"] == 1]
    assert len(restarted) == 1
    assert restarted[0]["last_exit"] == "user container killed by SIGKILL"
