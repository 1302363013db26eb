"""The multiscaler against a fake platform and fake pod stats endpoints (real HTTP), on a fake clock."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from autoscaler.multiscaler import Multiscaler, idlest_pods
from autoscaler.probe import AssumeActivatorInPath
from autoscaler.scraper import Scraper
from autoscaler.statclient import StatClient
from serving.autoscaling import PREFIX, parse_config
from serving.clock import FakeClock
from serving.platform import Pod, Revision, RevisionKey
from serving.platformclient import HttpPlatform
from serving.stat import RevisionStat, Stat
from tests.fakes.platform import FakePlatform
from tests.fakes.statfleet import FakeStatFleet

KEY = RevisionKey("default", "hello-00001")


def revision(pods: tuple[Pod, ...] = (), **annotations: str) -> Revision:
    return Revision(
        key=KEY,
        service="hello",
        configuration="hello",
        annotations={PREFIX + k.replace("_", "-"): v for k, v in annotations.items()},
        pods=pods,
    )


@dataclass
class World:
    platform: FakePlatform
    fleet: FakeStatFleet
    clock: FakeClock
    registry: CollectorRegistry
    scaler: Multiscaler

    async def show(self, rev: Revision) -> None:
        await self.platform.put(rev)
        self.scaler.apply_snapshot(self.platform.snapshot())

    async def tick(self, seconds: float = 2.0) -> None:
        """Two scrapes (one per second) then a decision, as the loops do over one decider interval."""
        for _ in range(int(seconds)):
            self.clock.advance(1.0)
            await self.scaler.scrape_once()
        await self.scaler.decide_all()
        await self.scaler.settle()

    def gauge(self, name: str) -> float | None:
        return self.registry.get_sample_value(
            name, {"namespace_name": KEY.namespace, "revision_name": KEY.name}
        )


@pytest.fixture
async def world() -> AsyncIterator[World]:
    platform = FakePlatform()
    await platform.start()
    fleet = FakeStatFleet()
    registry = CollectorRegistry()
    clock = FakeClock(10_000.0)
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
        try:
            yield World(platform, fleet, clock, registry, scaler)
        finally:
            await scaler.aclose()
            stat_client.close()
            await fleet.stop()
            await platform.stop()


async def test_scales_up_under_load_and_publishes_status(world: World) -> None:
    fakes = await world.fleet.start(2, concurrency=140.0)  # 280 in flight: 4 pods at 70 each
    await world.show(revision(tuple(f.pod() for f in fakes)))
    await world.tick()
    assert world.platform.scale_calls == [(KEY, 4, [])]
    status = world.platform.statuses[KEY]
    # A fresh autoscaler that finds 2 ready pods starts in panic.
    assert (status.desired_pods, status.stable_concurrency, status.panic) == (4, 280.0, True)
    # 2 pods of capacity 100 cannot absorb a 211 burst on top of 280: the activator stays in the path.
    assert (status.mode, status.excess_burst_capacity, status.activators) == ("Proxy", -291.0, 5)
    assert world.gauge("autoscaler_desired_pods") == 4
    assert world.gauge("autoscaler_actual_pods") == 2
    assert world.gauge("autoscaler_stable_request_concurrency") == 280.0


async def test_scale_in_removes_the_idlest_pods(world: World) -> None:
    fakes = await world.fleet.start(4)
    for fake, load in zip(fakes, (5.0, 0.5, 3.0, 0.0), strict=True):
        fake.stat = dataclasses.replace(fake.stat, average_concurrent_requests=load)
    old = time.time() - 3600
    pods = tuple(dataclasses.replace(f.pod(), started_at=old) for f in fakes)
    await world.show(revision(pods, target="4", target_utilization_percentage="100"))
    await world.tick()
    # 8.5 in flight at 4 per pod wants 3; a restarted autoscaler with 4 ready pods holds them in panic first.
    assert world.platform.scale_calls == [(KEY, 4, [])]
    for _ in range(31):
        await world.tick()
    assert world.platform.scale_calls[-1] == (KEY, 3, [fakes[3].name])


async def test_activator_stats_count_and_wake_a_revision_at_zero(world: World) -> None:
    await world.show(revision())
    world.clock.advance(1.0)
    world.scaler.record_activator(
        [RevisionStat(KEY.namespace, KEY.name, Stat(average_concurrent_requests=0.0))]
    )
    await world.scaler.decide_all()
    await world.scaler.settle()
    scaler = world.scaler.scaler(KEY)
    assert scaler is not None
    assert scaler.desired == 0
    assert world.platform.scale_calls == []  # still activating: nothing to apply
    world.clock.advance(0.5)
    world.scaler.record_activator(
        [RevisionStat(KEY.namespace, KEY.name, Stat(average_concurrent_requests=1.0, request_count=1.0))]
    )
    for _ in range(100):  # the poke decides at once, without a decider tick
        if world.platform.scale_calls:
            break
        await asyncio.sleep(0.01)
    assert world.platform.scale_calls == [(KEY, 1, [])]


async def test_invalid_annotations_are_reported_and_not_scaled(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        await world.show(revision(window="1s"))
    assert "window=1s must be between 6s and 1h" in caplog.text
    assert world.scaler.scaler(KEY) is None
    await world.tick()
    assert world.platform.scale_calls == []
    await world.show(revision(window="10s"))  # fixed: autoscaled from now on
    assert world.scaler.scaler(KEY) is not None


async def test_deleted_revision_is_forgotten(world: World) -> None:
    fakes = await world.fleet.start(1, concurrency=10.0)
    await world.show(revision((fakes[0].pod(),)))
    await world.tick()
    assert world.gauge("autoscaler_ready_pods") == 1
    await world.platform.remove(KEY)
    world.scaler.apply_snapshot(world.platform.snapshot())
    assert world.scaler.revisions == []
    assert world.gauge("autoscaler_ready_pods") is None


async def test_a_revision_with_a_dead_pod_does_not_hold_up_others(world: World) -> None:
    fakes = await world.fleet.start(1, concurrency=140.0)
    fakes[0].behaviour = "stall"
    other = RevisionKey("default", "other-00001")
    live = await world.fleet.start(1, concurrency=140.0)
    await world.show(revision((fakes[0].pod(),)))
    await world.platform.put(
        Revision(key=other, service="other", configuration="other", pods=(live[0].pod(),))
    )
    world.scaler.apply_snapshot(world.platform.snapshot())
    world.scaler.scrape_tick()  # returns at once; each revision scrapes in its own task
    other_scaler = world.scaler.scaler(other)
    stalled = world.scaler.scaler(KEY)
    assert other_scaler is not None
    assert stalled is not None
    for _ in range(1000):
        if other_scaler.collection.stable_and_panic("concurrency", world.clock.now()) is not None:
            break
        await asyncio.sleep(0.01)
    assert other_scaler.collection.stable_and_panic("concurrency", world.clock.now()) == (140.0, 140.0)
    assert stalled.collection.stable_and_panic("concurrency", world.clock.now()) is None  # still waiting


def test_idlest_pods_order() -> None:
    def pod(name: str, ready: bool = True, started: float = 0.0) -> Pod:
        return Pod(name=name, host="h", port=1, stats_port=1, admin_port=1, ready=ready, started_at=started)

    pods = [
        pod("busy"),
        pod("idle"),
        pod("starting", ready=False),
        pod("unknown-young", started=5.0),
        pod("mid"),
    ]
    load = {"busy": 9.0, "idle": 0.0, "mid": 4.0}
    assert idlest_pods(pods, 3, load) == ["starting", "idle", "mid"]
    assert idlest_pods(pods, 0, load) == []


async def test_a_revision_no_route_reaches_any_more_drops_its_min_scale(world: World) -> None:
    """Knative's reachability: min-scale holds a routed revision's idle pods, and lets go once the routes
    moved on."""
    fakes = await world.fleet.start(2, concurrency=0.0)
    pods = tuple(f.pod() for f in fakes)
    await world.show(revision(pods, min_scale="2"))
    for _ in range(35):  # past the start-up panic and the stable window: idle, yet held at 2
        await world.tick()
    assert world.platform.statuses[KEY].desired_pods == 2
    await world.show(dataclasses.replace(revision(pods, min_scale="2"), reachable=False))
    for _ in range(20):  # the scale-to-zero grace period
        await world.tick()
    assert world.platform.statuses[KEY].desired_pods == 0
    assert world.platform.scale_calls[-1][:2] == (KEY, 0)
