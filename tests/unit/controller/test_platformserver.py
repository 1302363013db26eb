"""The platform API's watch stream: a line per change of revisions or pods, one encoding for all watchers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from controller.local.platformserver import PlatformServer
from controller.local.store import Store
from serving.platform import Pod, Revision, RevisionKey, ScalerStatus

KEY = RevisionKey("default", "hello-00001")


class FakeScaler:
    def scale(self, key: RevisionKey, replicas: int, remove: list[str]) -> bool:
        return key == KEY


def pod(ready: bool) -> Pod:
    return Pod(
        name="hello-00001-abcde",
        host="127.0.0.1",
        port=8012,
        stats_port=9090,
        admin_port=8022,
        ready=ready,
        started_at=1.0,
    )


def status(desired: int) -> ScalerStatus:
    return ScalerStatus(
        desired_pods=desired,
        mode="Proxy",
        stable_concurrency=0.0,
        panic_concurrency=0.0,
        panic=False,
        excess_burst_capacity=-1.0,
        activators=1,
    )


@pytest.fixture
async def served() -> AsyncIterator[tuple[Store, TestServer]]:
    store = Store()
    store.put_revision(Revision(key=KEY, service="hello", configuration="hello"))
    server = TestServer(PlatformServer(store, FakeScaler()).app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield store, server
    finally:
        await server.close()


async def next_line(content: aiohttp.StreamReader) -> bytes:
    return await asyncio.wait_for(content.readline(), 5.0)


def pods_of(line: bytes) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = json.loads(line)["revisions"][0]["pods"]
    return pods


async def test_watchers_get_one_line_per_pod_change_and_none_for_statuses(
    served: tuple[Store, TestServer],
) -> None:
    store, server = served
    url = server.make_url("/v1/revisions")
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, params={"watch": "true"}) as first,
        session.get(url, params={"watch": "true"}) as second,
    ):
        a, b = await next_line(first.content), await next_line(second.content)
        assert a == b
        assert pods_of(a) == []
        assert store.set_status(KEY, status(1))  # not in the snapshot: no line
        store.set_pods(KEY, (pod(ready=False),))
        a, b = await next_line(first.content), await next_line(second.content)
        assert a == b, "every watcher gets the same encoded snapshot"
        assert [p["ready"] for p in pods_of(a)] == [False]
        assert store.set_status(KEY, status(2))
        store.set_pods(KEY, (pod(ready=True),))
        a = await next_line(first.content)
        assert [p["ready"] for p in pods_of(a)] == [True], "the status change sent no line of its own"
        assert json.loads(a)["resourceVersion"] == store.version


async def test_a_late_watcher_starts_from_the_current_snapshot(served: tuple[Store, TestServer]) -> None:
    store, server = served
    store.set_pods(KEY, (pod(ready=True),))
    assert store.set_status(KEY, status(1))
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.make_url("/v1/revisions"), params={"watch": "true"}) as watch,
    ):
        line = await next_line(watch.content)
    assert [p["ready"] for p in pods_of(line)] == [True]
