"""Delivery of one event with a Trigger's policy, against a real subscriber server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from eventing.delivery import Attempt, Deliverer, Gate, backoff
from eventing.event import Event
from eventing.session import client_session
from serving.contract.eventing import DeliverySpec

EVENT = Event(
    {"specversion": "1.0", "id": "e1", "source": "/s", "type": "t", "datacontenttype": "text/plain"}, b"hi"
)


@dataclass
class Subscriber:
    """Answers each POST with the next status of `script` (then 200), and records what it got."""

    script: list[int] = field(default_factory=list)
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    reply: bool = False

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        status = self.script.pop(0) if self.script else 200
        if status == 200 and self.reply:
            return web.Response(
                status=200,
                body=b'{"ok":1}',
                headers={
                    "ce-specversion": "1.0",
                    "ce-id": "r1",
                    "ce-source": "/reply",
                    "ce-type": "reply",
                    "Content-Type": "application/json",
                },
            )
        return web.Response(status=status, text=f"answer {status}")


async def serve(sub: Subscriber) -> TestServer:
    app = web.Application()
    app.router.add_post("/{tail:.*}", sub.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def deliverer() -> AsyncIterator[tuple[Deliverer, list[float]]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with client_session() as session:
        yield Deliverer(session, sleep=sleep), slept


async def test_delivered_in_binary_mode_with_reply(deliverer: tuple[Deliverer, list[float]]) -> None:
    sub = Subscriber(reply=True)
    server = await serve(sub)
    try:
        outcome = await deliverer[0].deliver(str(server.make_url("/x")), EVENT, DeliverySpec())
    finally:
        await server.close()
    assert outcome.delivered
    headers, body = sub.got[0]
    assert (headers["ce-id"], headers["ce-type"], headers["Content-Type"], body) == (
        "e1",
        "t",
        "text/plain",
        b"hi",
    )
    assert outcome.reply is not None
    assert (outcome.reply.id, outcome.reply.data) == ("r1", b'{"ok":1}')


async def test_retries_then_dead_letters_with_error_extensions(
    deliverer: tuple[Deliverer, list[float]],
) -> None:
    failing, dead = Subscriber(script=[500, 500, 500]), Subscriber()
    s1, s2 = await serve(failing), await serve(dead)
    url = str(s1.make_url("/sub"))
    policy = DeliverySpec(retry=2, backoff_delay=0.5, dead_letter_sink=str(s2.make_url("/dls")))
    try:
        outcome = await deliverer[0].deliver(url, EVENT, policy)
    finally:
        await s1.close()
        await s2.close()
    assert not outcome.delivered
    assert outcome.dead_lettered
    assert len(failing.got) == 3
    assert deliverer[1] == [0.5, 1.0]  # exponential: delay * 2^(n-1)
    headers, body = dead.got[0]
    assert headers["ce-knativeerrorcode"] == "500"
    assert headers["ce-knativeerrordest"] == url
    assert base64.b64decode(headers["ce-knativeerrordata"]) == b"answer 500"
    assert body == b"hi"


async def test_a_client_error_is_not_retried(deliverer: tuple[Deliverer, list[float]]) -> None:
    sub = Subscriber(script=[400])
    server = await serve(sub)
    try:
        outcome = await deliverer[0].deliver(str(server.make_url("/")), EVENT, DeliverySpec(retry=5))
    finally:
        await server.close()
    assert not outcome.delivered
    assert not outcome.dead_lettered
    assert len(sub.got) == 1


async def test_overload_is_retried_beyond_the_retry_budget(deliverer: tuple[Deliverer, list[float]]) -> None:
    sub = Subscriber(script=[503, 429, 503, 503])
    server = await serve(sub)
    try:
        outcome = await deliverer[0].deliver(str(server.make_url("/")), EVENT, DeliverySpec(retry=0))
    finally:
        await server.close()
    assert outcome.delivered
    assert len(sub.got) == 5


async def test_a_refused_connection_is_retried(deliverer: tuple[Deliverer, list[float]]) -> None:
    sub = Subscriber()
    server = await serve(sub)
    url = str(server.make_url("/"))
    await server.close()
    outcome = await deliverer[0].deliver(url, EVENT, DeliverySpec(retry=1, backoff_delay=0.1))
    assert not outcome.delivered
    assert outcome.attempts == 2
    assert outcome.last is not None
    assert outcome.last.status is None


@pytest.mark.parametrize(
    ("policy", "delays"),
    [
        pytest.param(DeliverySpec(backoff_delay=0.2), [0.2, 0.4, 0.8], id="exponential"),
        pytest.param(DeliverySpec(backoff_policy="linear", backoff_delay=0.2), [0.2, 0.4, 0.6], id="linear"),
    ],
)
def test_backoff(policy: DeliverySpec, delays: list[float]) -> None:
    assert [round(backoff(policy, n), 6) for n in (1, 2, 3)] == delays


async def test_an_event_that_cannot_be_sent_is_final(deliverer: tuple[Deliverer, list[float]]) -> None:
    """A header value no HTTP message may carry (as a foreign Kafka producer could write): not retried."""
    sub = Subscriber()
    server = await serve(sub)
    bad = Event({**EVENT.attributes, "datacontenttype": "text/plain\r\nX-Evil: 1"}, b"x")
    try:
        outcome = await deliverer[0].deliver(str(server.make_url("/")), bad, DeliverySpec(retry=3))
    finally:
        await server.close()
    assert not outcome.delivered
    assert outcome.attempts == 1
    assert sub.got == []


async def test_the_gate_admits_up_to_its_limit_in_arrival_order_and_grows_back() -> None:
    now = [0.0]
    gate = Gate(3, clock=lambda: now[0])
    order: list[int] = []
    release = asyncio.Event()

    async def attempt(n: int) -> None:
        async with gate:
            order.append(n)
            await release.wait()

    tasks = [asyncio.create_task(attempt(n)) for n in range(6)]
    await asyncio.sleep(0.01)
    assert (order, gate.active) == ([0, 1, 2], 3)
    # An overloaded answer halves the limit: the places freed are not handed on beyond it.
    gate.observe(Attempt(503))
    assert gate.limit == 1.5
    release.set()
    await asyncio.sleep(0.01)
    assert order == [0, 1, 2, 3, 4, 5]  # each waiter in turn, one place at a time
    await asyncio.gather(*tasks)
    assert gate.active == 0
    # Successes grow it back by a fraction of a place each, never above its ceiling.
    for _ in range(20):
        gate.observe(Attempt(200))
    assert gate.limit == 3.0


@pytest.mark.parametrize("handed", [False, True], ids=["cancelled-while-waiting", "cancelled-once-handed"])
async def test_a_cancelled_waiter_leaves_its_place_to_the_next(handed: bool) -> None:
    gate = Gate(1)
    await gate.__aenter__()  # the one place is taken
    entered: list[str] = []

    async def wait(name: str) -> None:
        async with gate:
            entered.append(name)

    cancelled = asyncio.create_task(wait("cancelled"))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(wait("next"))
    await asyncio.sleep(0)
    if handed:
        await gate.__aexit__()  # no await inside: the place goes to the first waiter, which has not run yet
        cancelled.cancel()
    else:
        cancelled.cancel()
        await gate.__aexit__()
    await asyncio.wait_for(waiting, 2)  # a place lost with the cancelled waiter would leave it waiting
    assert isinstance((await asyncio.gather(cancelled, return_exceptions=True))[0], asyncio.CancelledError)
    assert entered == ["next"]
    assert gate.active == 0
