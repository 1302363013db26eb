"""Editing a Service file while `serving up` runs: a new revision takes 100 % of the traffic with no failed
request, an invalid edit is rejected while the old revision keeps serving, and the old one scales to zero.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.integration.conftest import Load, ServingUp, eventually, write_app_service

Start = Callable[..., Awaitable[ServingUp]]

ANNOTATIONS = {
    "autoscaling.knative.dev/window": "6s",
    # The activator leaves the path as soon as there is a pod, so the router's direct (Serve) path is used.
    "autoscaling.knative.dev/target-burst-capacity": "0",
}


async def test_edit_rolls_out_a_new_revision_under_traffic_without_errors(
    serving_up: Start, tmp_path: Path
) -> None:
    yaml = write_app_service(tmp_path, "roll", target="v1", annotations=ANNOTATIONS)
    up = await serving_up([yaml], ["--autoscaler-config", "scale-to-zero-grace-period=2s"])
    await up.wait_revision("roll-00001", lambda r: r["mode"] == "Serve", 30, "v1 never reached Serve mode")
    load = Load(up.url("/?ms=20"), up.host("roll"), workers=4)
    load.start()
    try:
        await asyncio.sleep(1.0)
        # An invalid edit: rejected, the running revision keeps all the traffic.
        yaml.write_text(yaml.read_text().replace("containerConcurrency: 0", "containerConcurrency: -3"))

        async def rejected() -> bool:
            return "edit rejected" in up.output()

        await eventually(rejected, 15, "the invalid edit was not reported")
        assert "containerConcurrency" in up.output()
        assert [s["latest_created_revision"] for s in (await up.status())["services"]] == ["roll-00001"]

        write_app_service(tmp_path, "roll", target="v2", annotations=ANNOTATIONS)

        async def on_v2() -> bool:
            recent = load.results[-8:]
            return len(recent) == 8 and all(" roll-00002 " in body for _, _, _, body in recent)

        await eventually(on_v2, 30, "traffic did not move to the new revision")
        await asyncio.sleep(1.0)
    finally:
        await load.stop()
    failed = load.failures()
    assert failed == [], (
        f"{len(failed)} of {len(load.results)} requests failed during the rollout: {failed[:3]}"
    )
    bodies = [body for _, _, _, body in load.results]
    assert any(b.startswith("v1 roll-00001") for b in bodies)
    assert bodies[-1].startswith("v2 roll-00002")
    # Once v2 answered, v1 never did again: the route moved in one step.
    first_v2 = next(i for i, b in enumerate(bodies) if "roll-00002" in b)
    assert all("roll-00002" in b for b in bodies[first_v2 + 8 :])

    [service] = (await up.status())["services"]
    assert service["latest_ready_revision"] == "roll-00002"
    assert {r["name"]: r["traffic_percent"] for r in service["revisions"]} == {
        "roll-00001": 0,
        "roll-00002": 100,
    }
    await up.wait_revision(
        "roll-00001", lambda r: r["actual_pods"] == 0, 40, "the old revision kept its pods"
    )
