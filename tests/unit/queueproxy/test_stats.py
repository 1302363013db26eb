from __future__ import annotations

import pytest

from queueproxy.stats import StatReporter, stats_routes
from serving.clock import FakeClock
from serving.concurrency import RequestStats
from serving.http.endpoints import endpoints
from serving.stat import PROTOBUF_CONTENT_TYPE, decode_stat
from tests.unit.serving.http.rawhttp import RawClient, engine, get


def reporter_at(clock: FakeClock) -> tuple[RequestStats, StatReporter]:
    stats = RequestStats(clock.now())
    return stats, StatReporter(stats, "pod-a", now=clock.now, unix_ns=lambda: 1_700_000_000_000_000_000)


def test_two_half_second_requests_average_one() -> None:
    clock = FakeClock(100.0)
    stats, reporter = reporter_at(clock)
    stats.request_in(clock.now(), proxied=False)
    clock.advance(0.5)
    stats.request_out(clock.now(), proxied=False)
    stats.request_in(clock.now(), proxied=True)
    clock.advance(0.5)
    stats.request_out(clock.now(), proxied=True)
    stat = reporter.report()
    assert stat.pod_name == "pod-a"
    assert stat.average_concurrent_requests == pytest.approx(1.0)
    assert stat.average_proxied_concurrent_requests == pytest.approx(0.5)
    assert (stat.request_count, stat.proxied_request_count) == (2.0, 1.0)
    assert stat.process_uptime == pytest.approx(1.0)
    assert stat.timestamp == 1_700_000_000_000_000_000


def test_in_flight_request_carries_into_the_next_window() -> None:
    clock = FakeClock()
    stats, reporter = reporter_at(clock)
    stats.request_in(clock.now(), proxied=False)
    clock.advance(1.0)
    first = reporter.report()
    clock.advance(0.25)
    stats.request_out(clock.now(), proxied=False)
    clock.advance(0.75)
    second = reporter.report()
    assert (first.average_concurrent_requests, first.request_count) == (1.0, 1.0)
    assert second.average_concurrent_requests == pytest.approx(0.25)
    assert second.request_count == 0.0


def test_before_the_first_window_the_stat_is_empty() -> None:
    _, reporter = reporter_at(FakeClock())
    assert reporter.last.pod_name == "pod-a"
    assert reporter.last.request_count == 0.0


async def test_scrapes_return_the_last_window_without_resetting() -> None:
    clock = FakeClock()
    stats, reporter = reporter_at(clock)
    for _ in range(3):
        stats.request_in(clock.now(), proxied=False)
        stats.request_out(clock.now(), proxied=False)
    clock.advance(1.0)
    reporter.report()
    async with engine(endpoints(stats_routes(reporter))) as port:
        client = await RawClient.connect(port)
        bodies = []
        for _ in range(2):
            response = await client.request(get("/metrics"))
            assert response.status == 200
            assert response.header("Content-Type") == PROTOBUF_CONTENT_TYPE
            bodies.append(response.body)
        await client.close()
    assert bodies[0] == bodies[1]
    assert decode_stat(bodies[0]).request_count == 3.0
