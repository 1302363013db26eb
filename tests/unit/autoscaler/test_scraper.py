from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator

import pytest

from autoscaler.scraper import SCRAPER_POD_NAME, ScrapeError, Scraper, sample_size, scale_to_population
from autoscaler.statclient import StatClient
from serving.platform import Pod
from serving.stat import Stat
from tests.fakes.statfleet import FakeStatFleet

WINDOW = 60.0


@pytest.fixture
async def fleet() -> AsyncIterator[FakeStatFleet]:
    running = FakeStatFleet()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def client() -> AsyncIterator[StatClient]:
    stat_client = StatClient(timeout=2.0)
    try:
        yield stat_client
    finally:
        stat_client.close()


@pytest.mark.parametrize(
    ("population", "sample"),
    [
        pytest.param(0, 0, id="none"),
        pytest.param(1, 1, id="one"),
        pytest.param(3, 3, id="three-all"),
        pytest.param(4, 4, id="four"),
        pytest.param(10, 7, id="ten"),
        pytest.param(20, 9, id="twenty"),
        pytest.param(100, 14, id="hundred"),
        pytest.param(1000, 16, id="thousand"),
    ],
)
def test_sample_size_formula(population: int, sample: int) -> None:
    assert sample_size(population) == sample


def test_scale_to_population() -> None:
    stats = [
        Stat(average_concurrent_requests=2.0, average_proxied_concurrent_requests=1.0, request_count=10.0)
    ] * 3
    total = scale_to_population(stats, 3, 12)
    assert total.pod_name == SCRAPER_POD_NAME
    assert (total.average_concurrent_requests, total.average_proxied_concurrent_requests) == (24.0, 12.0)
    assert total.request_count == 120.0


async def test_small_revision_is_scraped_whole(fleet: FakeStatFleet, client: StatClient) -> None:
    fakes = await fleet.start(3, concurrency=2.5)
    scraper = Scraper(client)
    result = await scraper.scrape([f.pod() for f in fakes], WINDOW, time.time())
    assert result is not None
    assert (result.sampled, result.population) == (3, 3)
    assert result.stat.average_concurrent_requests == 7.5
    assert result.pod_concurrency == {f.name: 2.5 for f in fakes}
    assert [f.hits for f in fakes] == [1, 1, 1]


async def test_large_revision_is_sampled_and_scaled(fleet: FakeStatFleet, client: StatClient) -> None:
    fakes = await fleet.start(20, concurrency=3.0)
    scraper = Scraper(client, rng=random.Random(7))
    result = await scraper.scrape([f.pod() for f in fakes], WINDOW, time.time())
    assert result is not None
    assert (result.sampled, result.population) == (9, 20)
    assert sum(f.hits for f in fakes) == 9
    assert result.stat.average_concurrent_requests == pytest.approx(60.0)
    assert result.stat.request_count == pytest.approx(60.0)


async def test_older_pods_are_scraped_first(fleet: FakeStatFleet, client: StatClient) -> None:
    fakes = await fleet.start(20)
    now = time.time()
    old = {f.name for f in fakes[:12]}
    pods = [f.pod() for f in fakes]
    aged = [
        Pod(
            name=p.name,
            host=p.host,
            port=p.port,
            stats_port=p.stats_port,
            admin_port=p.admin_port,
            ready=True,
            started_at=now - (600 if p.name in old else 5),
        )
        for p in pods
    ]
    result = await Scraper(client).scrape(aged, WINDOW, now)
    assert result is not None
    assert set(result.pod_concurrency) <= old  # 9 sampled, all among the 12 old pods
    assert {f.name for f in fakes if f.hits} <= old


async def test_only_ready_pods_count(fleet: FakeStatFleet, client: StatClient) -> None:
    fakes = await fleet.start(3, concurrency=4.0)
    pods = [fakes[0].pod(), fakes[1].pod(ready=False), fakes[2].pod()]
    result = await Scraper(client).scrape(pods, WINDOW, time.time())
    assert result is not None
    assert (result.population, result.stat.average_concurrent_requests) == (2, 8.0)
    assert fakes[1].hits == 0
    assert await Scraper(client).scrape([fakes[0].pod(ready=False)], WINDOW, time.time()) is None


async def test_failed_pods_are_replaced_by_the_next_in_line(fleet: FakeStatFleet, client: StatClient) -> None:
    fakes = await fleet.start(10, concurrency=1.0)
    fakes[0].behaviour = "error"
    fakes[1].behaviour = "text"
    dead = Pod(name="dead", host="127.0.0.1", port=1, stats_port=1, admin_port=1, ready=True, started_at=0.0)
    pods = [dead] + [f.pod() for f in fakes]
    result = await Scraper(client).scrape(pods, WINDOW, time.time())
    assert result is not None
    assert (result.sampled, result.population) == (7, 11)
    assert {"dead", fakes[0].name, fakes[1].name}.isdisjoint(result.pod_concurrency)
    assert result.stat.average_concurrent_requests == pytest.approx(11.0)


async def test_a_silent_pod_costs_one_timeout_not_the_tick(fleet: FakeStatFleet, client: StatClient) -> None:
    fakes = await fleet.start(5, concurrency=2.0)
    fakes[2].behaviour = "stall"
    started = time.monotonic()
    client = StatClient(timeout=0.5)
    try:
        result = await Scraper(client).scrape([f.pod() for f in fakes], WINDOW, time.time())
    finally:
        client.close()
    elapsed = time.monotonic() - started
    assert result is not None
    assert fakes[2].name not in result.pod_concurrency
    assert result.stat.average_concurrent_requests == pytest.approx(10.0)  # 4 answers scaled to 5 pods
    assert elapsed < 5.0  # bounded by the 0.5 s per-request timeout, with slack for a loaded machine


async def test_too_few_answers_fail_the_scrape(fleet: FakeStatFleet, client: StatClient) -> None:
    fakes = await fleet.start(2)
    fakes[1].behaviour = "error"
    with pytest.raises(ScrapeError, match="only 1 of 2 sampled pods answered"):
        await Scraper(client).scrape([f.pod() for f in fakes], WINDOW, time.time())
