from __future__ import annotations

import asyncio

import aiohttp

from serving.platform import Pod, Revision, RevisionKey, ScalerStatus, Snapshot
from serving.platformclient import HttpPlatform
from tests.fakes.platform import FakePlatform

KEY = RevisionKey("default", "hello-00001")


def pod(name: str, port: int) -> Pod:
    return Pod(
        name=name,
        host="127.0.0.1",
        port=port,
        stats_port=port + 1,
        admin_port=port + 2,
        ready=True,
        started_at=1.0,
    )


async def test_watch_sees_snapshot_then_changes_and_actuation_reaches_platform() -> None:
    fake = FakePlatform()
    url = await fake.start()
    await fake.put(Revision(key=KEY, service="hello", configuration="hello", container_concurrency=1))
    try:
        async with aiohttp.ClientSession() as session:
            client = HttpPlatform(url, session)
            watch = client.watch()
            first: Snapshot = await asyncio.wait_for(anext(watch), 5)
            assert [r.key for r in first.revisions] == [KEY]
            assert first.revisions[0].pods == ()
            await fake.set_pods(KEY, (pod("p1", 40000),))
            second = await asyncio.wait_for(anext(watch), 5)
            assert second.revisions[0].pods[0].address == "127.0.0.1:40000"
            assert second.resource_version > first.resource_version
            await watch.aclose()

            await client.scale(KEY, 3, ["p1"])
            assert fake.scale_calls == [(KEY, 3, ["p1"])]
            status = ScalerStatus(
                desired_pods=3,
                mode="Serve",
                stable_concurrency=2.5,
                panic_concurrency=4.0,
                panic=False,
                excess_burst_capacity=5.0,
                activators=2,
            )
            await client.publish(KEY, status)
            assert fake.statuses[KEY] == status
    finally:
        await fake.stop()
