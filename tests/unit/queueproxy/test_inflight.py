from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from queueproxy.inflight import InFlight
from serving.clock import FakeClock


@dataclass
class FakeExchange:
    response_started: bool = False


async def forever() -> None:
    await asyncio.Event().wait()


async def test_requests_past_their_deadline_are_cancelled_once() -> None:
    clock = FakeClock()
    in_flight = InFlight(now=clock.now)
    early, late = asyncio.create_task(forever()), asyncio.create_task(forever())
    in_flight.add(early, FakeExchange(), upgrade=False, deadline=1.0)
    in_flight.add(late, FakeExchange(), upgrade=False, deadline=5.0)
    assert in_flight.expire() == 0
    clock.advance(1.0)
    assert in_flight.expire() == 1
    assert in_flight.expire() == 0, "an expired request is cancelled only once"
    assert in_flight.expired(early)
    assert not in_flight.expired(late)
    await asyncio.sleep(0)
    assert early.cancelled()
    in_flight.discard(early, upgrade=False)
    assert not in_flight.expired(early)
    late.cancel()
    in_flight.discard(late, upgrade=False)
    assert len(in_flight) == 0


async def test_established_upgrades_are_exempt_from_the_request_timeout() -> None:
    clock = FakeClock()
    in_flight = InFlight(now=clock.now)
    waiting, established = asyncio.create_task(forever()), asyncio.create_task(forever())
    in_flight.add(waiting, FakeExchange(response_started=False), upgrade=True, deadline=1.0)
    in_flight.add(established, FakeExchange(response_started=True), upgrade=True, deadline=1.0)
    clock.advance(2.0)
    assert in_flight.expire() == 1
    assert in_flight.expired(waiting)
    assert not in_flight.expired(established)
    established.cancel()
    await asyncio.gather(waiting, established, return_exceptions=True)


async def test_shutdown_waits_for_requests_and_cuts_off_upgrades() -> None:
    in_flight = InFlight()
    release = asyncio.Event()

    async def request() -> None:
        await release.wait()

    plain = asyncio.create_task(request())
    upgraded = asyncio.create_task(forever())
    in_flight.add(plain, FakeExchange(), upgrade=False, deadline=1e9)
    in_flight.add(upgraded, FakeExchange(response_started=True), upgrade=True, deadline=1e9)
    plain.add_done_callback(lambda task: in_flight.discard(task, upgrade=False))
    upgraded.add_done_callback(lambda task: in_flight.discard(task, upgrade=True))
    waiting = asyncio.create_task(in_flight.wait_plain())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    assert in_flight.plain == 1
    release.set()
    await asyncio.wait_for(waiting, 1)
    await in_flight.close_upgrades(0.01)
    assert upgraded.cancelled()
    assert len(in_flight) == 0


async def _cancelled_within(task: asyncio.Task[None], seconds: float) -> None:
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), seconds)
    assert task.cancelled()


async def test_the_sweeper_expires_each_request_at_its_deadline_also_after_idle_spells() -> None:
    """The sweeper sleeps until the next deadline (or a request); every request still times out on time."""
    in_flight = InFlight()
    sweeper = asyncio.create_task(in_flight.run_sweeper(interval=0.001))
    try:
        for _ in range(2):  # the second request arrives after the table was empty again
            await asyncio.sleep(0.005)
            task = asyncio.create_task(forever())
            deadline = time.monotonic() + 0.02
            in_flight.add(task, FakeExchange(), upgrade=False, deadline=deadline)
            await _cancelled_within(task, 1.0)
            assert time.monotonic() >= deadline, "not cancelled before its deadline"
            assert in_flight.expired(task)
            in_flight.discard(task, upgrade=False)
    finally:
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)


async def test_a_request_with_an_earlier_deadline_wakes_the_sweeper() -> None:
    in_flight = InFlight()
    sweeper = asyncio.create_task(in_flight.run_sweeper(interval=0.001))
    slow, fast = asyncio.create_task(forever()), asyncio.create_task(forever())
    try:
        in_flight.add(slow, FakeExchange(), upgrade=False, deadline=time.monotonic() + 60.0)
        await asyncio.sleep(0.005)  # the sweeper now sleeps until the slow request's deadline
        in_flight.add(fast, FakeExchange(), upgrade=False, deadline=time.monotonic() + 0.01)
        await _cancelled_within(fast, 1.0)
        assert in_flight.expired(fast)
        assert not in_flight.expired(slow)
        assert not slow.done()
    finally:
        slow.cancel()
        sweeper.cancel()
        await asyncio.gather(slow, sweeper, return_exceptions=True)
