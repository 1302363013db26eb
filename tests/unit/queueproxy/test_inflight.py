from __future__ import annotations

import asyncio
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
