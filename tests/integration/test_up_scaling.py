"""`serving up` scaling end to end: a burst at zero, traffic through 0 -> N -> 0, and scale to zero when idle.

Short autoscaling windows (6 s, Knative's minimum) and a 2 s scale-to-zero grace keep each test well under a
minute; every request a client sent must be answered 200.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.integration.conftest import Load, ServingUp, burst, write_app_service

Start = Callable[..., Awaitable[ServingUp]]

FAST = ["--autoscaler-config", "scale-to-zero-grace-period=2s"]
WINDOW = {"autoscaling.knative.dev/window": "6s"}


async def test_500_concurrent_requests_to_a_service_at_zero_all_succeed(
    serving_up: Start, tmp_path: Path
) -> None:
    yaml = write_app_service(
        tmp_path,
        "cold",
        annotations={**WINDOW, "autoscaling.knative.dev/max-scale": "4"},
    )
    up = await serving_up([yaml], FAST)
    await up.wait_revision(
        "cold-00001", lambda r: r["actual_pods"] == 0, 40, "revision did not scale to zero"
    )

    started = time.monotonic()
    results = await burst(up.url("/?ms=200"), up.host("cold"), 500)
    elapsed = time.monotonic() - started
    failed = [r for r in results if r[0] != 200]
    assert failed == [], f"{len(failed)} of 500 failed, e.g. {failed[:3]}"
    assert all(body.startswith(" cold-00001") or body.startswith("v1 cold-00001") for _, body in results)
    rev = await up.revision("cold-00001")
    assert rev is not None
    assert rev["ready_pods"] >= 1
    print(f"500 concurrent requests from zero answered in {elapsed:.2f}s with {rev['actual_pods']} pods")


async def test_steady_traffic_through_zero_to_many_to_zero_never_fails(
    serving_up: Start, tmp_path: Path
) -> None:
    yaml = write_app_service(
        tmp_path,
        "elastic",
        container_concurrency=10,
        annotations={
            **WINDOW,
            "autoscaling.knative.dev/max-scale": "4",
        },
    )
    up = await serving_up([yaml], FAST)
    name = "elastic-00001"
    await up.wait_revision(name, lambda r: r["actual_pods"] == 0, 40, "revision did not scale to zero")
    steady = Load(up.url("/?ms=100"), up.host("elastic"), workers=3)
    steady.start()
    try:
        await up.wait_revision(name, lambda r: r["ready_pods"] >= 1, 30, "no pod came up for steady traffic")
        surge = Load(up.url("/?ms=300"), up.host("elastic"), workers=40)
        surge.start()
        try:
            await up.wait_revision(
                name, lambda r: r["ready_pods"] >= 3, 30, "did not scale out under the surge"
            )
            # Keep the surge on the scaled-out revision long enough to count, however fast it scaled.
            deadline = time.monotonic() + 30
            while len(surge.results) <= 100 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            await surge.stop()
        await up.wait_revision(name, lambda r: r["actual_pods"] <= 1, 30, "did not scale back in")
    finally:
        await steady.stop()
    await up.wait_revision(name, lambda r: r["actual_pods"] == 0, 30, "did not scale to zero when idle")
    again = await burst(up.url("/"), up.host("elastic"), 20)
    results = steady.results + surge.results
    failed = [r for r in results if r[2] != 200] + [r for r in again if r[0] != 200]
    assert failed == [], f"{len(failed)} of {len(results) + 20} requests failed, e.g. {failed[:3]}"
    assert len(steady.results) > 50
    assert len(surge.results) > 100


async def test_idle_service_scales_to_zero_after_the_grace_period(serving_up: Start, tmp_path: Path) -> None:
    yaml = write_app_service(tmp_path, "idle", annotations=WINDOW)
    up = await serving_up([yaml], FAST)
    assert (await up.get("idle"))[0] == 200
    last_request = time.monotonic()
    await up.wait_revision("idle-00001", lambda r: r["actual_pods"] == 0, 40, "idle revision kept its pod")
    idle_for = time.monotonic() - last_request
    assert idle_for >= 2.0, f"scaled to zero {idle_for:.1f}s after the last request, before the grace period"
    rev = await up.revision("idle-00001")
    assert rev is not None
    assert (rev["desired_pods"], rev["ready_pods"], rev["traffic_percent"]) == (0, 0, 100)
    status, body = await up.get("idle")
    assert status == 200
    assert "idle-00001" in body
