"""The stat server as activators see it: a real websocket carrying `WireStatMessages`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from autoscaler.multiscaler import Multiscaler
from autoscaler.probe import AssumeActivatorInPath
from autoscaler.scraper import Scraper
from autoscaler.statclient import StatClient
from autoscaler.statserver import StatServer
from serving.autoscaling import parse_config
from serving.clock import FakeClock
from serving.platform import Revision, RevisionKey
from serving.platformclient import HttpPlatform
from serving.stat import RevisionStat, Stat, encode_wire
from tests.fakes.platform import FakePlatform

KEY = RevisionKey("default", "hello-00001")


@dataclass
class Running:
    url: str
    server: StatServer
    scaler: Multiscaler
    platform: FakePlatform
    clock: FakeClock
    session: aiohttp.ClientSession


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    platform = FakePlatform()
    await platform.start()
    await platform.put(Revision(key=KEY, service="hello", configuration="hello"))
    clock = FakeClock(500.0)
    registry = CollectorRegistry()
    stat_client = StatClient(timeout=2.0)
    async with aiohttp.ClientSession() as session:
        scaler = Multiscaler(
            actuator=HttpPlatform(platform.url, session),
            scraper=Scraper(stat_client),
            config=parse_config({}),
            clock=clock,
            registry=registry,
            activator_probe=AssumeActivatorInPath(),
        )
        scaler.apply_snapshot(platform.snapshot())
        server = StatServer(scaler, registry)
        runner = web.AppRunner(server.app(), shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            yield Running(f"http://127.0.0.1:{port}", server, scaler, platform, clock, session)
        finally:
            await scaler.aclose()
            stat_client.close()
            await runner.cleanup()
            await platform.stop()


def wire(concurrency: float, name: str = KEY.name) -> bytes:
    stat = Stat(pod_name="activator-0", average_concurrent_requests=concurrency, request_count=concurrency)
    return encode_wire([RevisionStat(KEY.namespace, name, stat)])


async def eventually(condition: object, timeout: float = 10.0) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_healthz_and_metrics(running: Running) -> None:
    async with running.session.get(running.url + "/healthz") as resp:
        assert resp.status == 200
    await running.scaler.decide_all()
    async with running.session.get(running.url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    assert 'autoscaler_desired_pods{namespace_name="default",revision_name="hello-00001"} -1.0' in text


async def test_probe_on_root_without_websocket(running: Running) -> None:
    async with running.session.get(running.url + "/", headers={"K-Kubelet-Probe": "queue"}) as resp:
        assert resp.status == 200
    async with running.session.get(running.url + "/") as resp:
        assert resp.status == 400


async def test_stats_are_recorded_and_malformed_messages_dropped(running: Running) -> None:
    async with running.session.ws_connect(running.url + "/") as ws:
        await eventually(lambda: running.server.connections == 1)
        await ws.send_bytes(b"\xff\xff\xff not protobuf")
        await ws.send_str("text is not a stat")
        await ws.send_bytes(wire(35.0))
        await ws.send_bytes(wire(5.0, name="unknown-revision"))
        scaler = running.scaler.scaler(KEY)
        assert scaler is not None
        await eventually(
            lambda: scaler.collection.stable_and_panic("concurrency", running.clock.now()) is not None
        )
        assert scaler.collection.stable_and_panic("concurrency", running.clock.now()) == (35.0, 35.0)
        assert running.server.dropped == 2
        assert not ws.closed


async def test_poke_at_zero_scales_up_at_once(running: Running) -> None:
    async with running.session.ws_connect(running.url + "/") as ws:
        await ws.send_bytes(wire(0.0))
        scaler = running.scaler.scaler(KEY)
        assert scaler is not None
        await eventually(
            lambda: scaler.collection.stable_and_panic("concurrency", running.clock.now()) is not None
        )
        await running.scaler.decide_all()  # the revision is idle: desired 0
        assert scaler.desired == 0
        running.clock.advance(0.3)
        await ws.send_bytes(wire(1.0))  # a request arrived at the activator
        await eventually(lambda: len(running.platform.scale_calls) == 1)
    assert running.platform.scale_calls == [(KEY, 1, [])]
    assert scaler.desired == 1
