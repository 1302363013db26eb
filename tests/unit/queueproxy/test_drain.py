from __future__ import annotations

import asyncio
import time

from queueproxy.drain import Drainer, admin_routes
from queueproxy.inflight import InFlight
from serving.clock import FakeClock
from serving.http.endpoints import Endpoint, endpoints
from tests.unit.serving.http.rawhttp import RawClient, Response, engine, get


async def call_wait_for_drain(routes: dict[str, Endpoint]) -> Response:
    """`GET /wait-for-drain` against `routes` served by the engine, as the app's preStop hook calls it."""
    async with engine(endpoints(routes)) as port:
        client = await RawClient.connect(port)
        response = await asyncio.wait_for(client.request(get("/wait-for-drain")), 5)
        await client.close()
    return response


async def test_health_fails_from_the_start_and_drain_ends_after_the_quiet_period() -> None:
    drainer = Drainer(0.03)
    states = [drainer.draining]
    started = time.monotonic()
    waiter = asyncio.create_task(drainer.wait())
    await asyncio.sleep(0)
    states.append(drainer.draining)
    assert states == [False, True]
    assert await waiter is True
    assert time.monotonic() - started >= 0.03


async def test_a_new_request_pushes_the_end_back() -> None:
    clock = FakeClock(10.0)
    drainer = Drainer(5.0, now=clock.now)
    drainer.begin()
    clock.advance(4.0)
    drainer.last_request = clock.now()  # a request arrived while draining
    clock.advance(4.0)
    # 4 s after that request: not drained yet; the waiter must sleep about 1 s more.
    waiter = asyncio.create_task(drainer.wait())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    clock.advance(1.0)
    drainer.reset()  # wake the waiter; reset calls the drain off
    assert await waiter is False


async def test_drained_once_stays_drained() -> None:
    clock = FakeClock()
    drainer = Drainer(1.0, now=clock.now)
    drainer.begin()
    clock.advance(1.0)
    assert await drainer.wait() is True
    assert await drainer.wait() is True


async def test_reset_ends_waiters_and_health_passes_again() -> None:
    drainer = Drainer(60.0)
    waiter = asyncio.create_task(drainer.wait())
    await asyncio.sleep(0)
    drainer.reset()
    assert await waiter is False
    assert not drainer.draining


async def test_wait_for_drain_without_sigterm_is_reset() -> None:
    drainer = Drainer(60.0)
    routes = admin_routes(drainer, asyncio.Event(), InFlight(), reset_after=0.02)
    response = await call_wait_for_drain(routes)
    assert response.status == 200
    assert not drainer.draining


async def test_wait_for_drain_after_sigterm_waits_for_the_drain() -> None:
    drainer = Drainer(0.03)
    terminating = asyncio.Event()
    terminating.set()
    started = time.monotonic()
    response = await call_wait_for_drain(admin_routes(drainer, terminating, InFlight()))
    assert (response.status, response.body) == (200, b"drained\n")
    assert time.monotonic() - started >= 0.03
    assert drainer.draining


class Request:
    """An in-flight entry: cancellable, and no response started."""

    response_started = False

    def cancel(self) -> bool:
        return True


async def test_wait_for_drain_also_waits_for_the_requests_the_app_still_serves() -> None:
    """The app gets SIGTERM when wait-for-drain returns: not while a request it was handed is in flight."""
    drainer = Drainer(0.01)
    terminating = asyncio.Event()
    terminating.set()
    in_flight = InFlight()
    request = Request()
    in_flight.add(request, request, upgrade=False, deadline=time.monotonic() + 60)
    async with engine(endpoints(admin_routes(drainer, terminating, in_flight))) as port:
        client = await RawClient.connect(port)
        waiting = asyncio.create_task(client.request(get("/wait-for-drain")))
        await asyncio.sleep(0.1)
        assert drainer.draining
        assert not waiting.done(), "drained of new requests, but one is still in flight"
        in_flight.discard(request, upgrade=False)
        response = await asyncio.wait_for(waiting, 5)
        await client.close()
    assert (response.status, response.body) == (200, b"drained\n")


async def test_a_called_off_drain_does_not_wait_for_requests_in_flight() -> None:
    drainer = Drainer(60.0)
    in_flight = InFlight()
    request = Request()
    in_flight.add(request, request, upgrade=False, deadline=time.monotonic() + 60)
    async with engine(endpoints(admin_routes(drainer, asyncio.Event(), in_flight, reset_after=0.02))) as port:
        client = await RawClient.connect(port)
        response = await asyncio.wait_for(client.request(get("/wait-for-drain")), 5)
        await client.close()
    assert response.status == 200
    assert in_flight.plain == 1


async def test_a_drain_called_off_while_waiting_for_requests_in_flight_returns_at_once() -> None:
    """A quiet period shorter than the reset delay: drained first, then (no SIGTERM) called off while a
    request is still in flight; the hook returns then, it does not wait for the app's traffic to pause."""
    drainer = Drainer(0.0)
    in_flight = InFlight()
    request = Request()
    in_flight.add(request, request, upgrade=False, deadline=time.monotonic() + 60)
    routes = admin_routes(drainer, asyncio.Event(), in_flight, reset_after=0.05)
    response = await call_wait_for_drain(routes)
    assert response.status == 200
    assert not drainer.draining
    assert in_flight.plain == 1


async def test_a_hook_that_gives_up_early_still_has_the_drain_called_off() -> None:
    """The engine cancels a handler whose client left; the liveness-restart check must outlive it, or the
    pod would fail its health checks for good."""
    drainer = Drainer(60.0)
    async with engine(endpoints(admin_routes(drainer, asyncio.Event(), InFlight(), reset_after=0.1))) as port:
        client = await RawClient.connect(port)
        await client.send(get("/wait-for-drain"))
        await asyncio.sleep(0.03)
        assert drainer.draining
        await client.close()
        await asyncio.sleep(0.3)
    assert not drainer.draining, "the drain was called off although the hook's client had left"
