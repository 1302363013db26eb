from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest

from activator.reporter import AutoscalerLink, StatReporter
from serving.clock import FakeClock
from serving.platform import RevisionKey
from serving.stat import RevisionStat, decode_wire
from tests.fakes.statserver import FakeStatServer

HELLO = RevisionKey("default", "hello-00001")
OTHER = RevisionKey("default", "other-00001")


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock(100.0)
        self.sent: list[list[RevisionStat]] = []
        self.reporter = StatReporter(
            pod_name="activator-0", clock=self.clock, send=lambda data: self.sent.append(decode_wire(data))
        )


def values(stats: list[RevisionStat]) -> dict[str, tuple[float, float]]:
    return {s.name: (s.stat.average_concurrent_requests, s.stat.request_count) for s in stats}


def test_first_request_pokes_at_once_with_concurrency_one() -> None:
    h = Harness()
    h.reporter.request_in(HELLO)
    assert len(h.sent) == 1
    [poke] = h.sent[0]
    assert (poke.namespace, poke.name) == ("default", "hello-00001")
    assert poke.stat.pod_name == "activator-0"
    assert poke.stat.average_concurrent_requests == 1.0
    assert poke.stat.request_count == 1.0
    h.reporter.request_in(HELLO)
    assert len(h.sent) == 1  # only the first request of a period pokes


def test_window_reports_time_weighted_average_minus_the_poke() -> None:
    h = Harness()
    loads = [h.reporter.request_in(HELLO) for _ in range(3)]  # 3 requests held for the whole second
    h.clock.advance(1.0)
    assert values(h.reporter.report()) == {"hello-00001": (2.0, 2.0)}  # 3 - 1 already reported by the poke
    h.clock.advance(0.5)
    h.reporter.request_out(loads[0])
    h.clock.advance(0.5)
    assert values(h.reporter.report()) == {"hello-00001": (2.5, 0.0)}


def test_idle_revision_reports_zero_once_then_is_forgotten_and_pokes_again() -> None:
    h = Harness()
    load = h.reporter.request_in(HELLO)
    h.clock.advance(0.25)
    h.reporter.request_out(load)
    h.clock.advance(0.75)
    assert values(h.reporter.report()) == {"hello-00001": (0.0, 0.0)}  # 0.25 - 1 clamps at 0
    h.clock.advance(1.0)
    assert values(h.reporter.report()) == {"hello-00001": (0.0, 0.0)}  # the drop is reported once
    h.clock.advance(1.0)
    assert h.reporter.report() == []
    h.reporter.request_in(HELLO)
    assert len(h.sent) == 2  # a new poke


def test_revisions_are_reported_separately() -> None:
    h = Harness()
    h.reporter.request_in(HELLO)
    h.reporter.request_in(OTHER)
    h.reporter.request_in(OTHER)
    h.clock.advance(1.0)
    assert values(h.reporter.report()) == {"hello-00001": (0.0, 0.0), "other-00001": (1.0, 1.0)}


def test_queued_requests_count_as_concurrency_while_they_wait() -> None:
    h = Harness()
    held = [h.reporter.request_in(HELLO) for _ in range(10)]
    for _ in range(3):
        h.clock.advance(1.0)
        h.reporter.report()
    h.clock.advance(1.0)
    assert values(h.reporter.report()) == {"hello-00001": (10.0, 0.0)}
    for load in held:
        h.reporter.request_out(load)


async def test_link_delivers_reconnects_and_reports_connection_state() -> None:
    server = FakeStatServer()
    await server.start()
    async with aiohttp.ClientSession() as session:
        link = AutoscalerLink(server.url, session, backoff_start=0.01, backoff_max=0.05)
        task = asyncio.create_task(link.run())
        try:
            await wait_until(lambda: link.connected)
            h = Harness()
            reporter = StatReporter(pod_name="a", clock=h.clock, send=link.send)
            reporter.request_in(HELLO)
            await server.wait_for(lambda s: len(s.stats) == 1)
            assert server.stats[0].stat.average_concurrent_requests == 1.0

            await server.drop_connections()
            await wait_until(lambda: server.connections == 2 and link.connected)
            reporter.request_in(OTHER)
            await server.wait_for(lambda s: any(x.name == "other-00001" for x in s.stats))
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    await server.stop()


async def test_link_drops_messages_while_down() -> None:
    async with aiohttp.ClientSession() as session:
        link = AutoscalerLink("ws://127.0.0.1:9/", session, backoff_start=0.01, backoff_max=0.02)
        task = asyncio.create_task(link.run())
        try:
            await asyncio.sleep(0.03)
            assert not link.connected
            link.send(b"x")
            assert link.dropped == 1
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)
