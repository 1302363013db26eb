"""One Trigger's delivery loop against a real subscriber on 127.0.0.1: it reads its log again, with back-off,
after the log failed to give events, and publishes a subscriber's reply into the Broker, retrying a log that
refuses it for a while and counting a reply it could not keep; the event is acknowledged either way."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator

import pytest

from eventing.backend import BackendError, Record
from eventing.delivery import Deliverer
from eventing.dispatcher import FETCH_RETRY, REPLY_ATTEMPTS, Dispatcher
from eventing.event import Event
from eventing.session import client_session
from serving.contract.eventing import TriggerSpec
from tests.unit.eventing.test_delivery import EVENT, Subscriber, serve


class FlakyLog:
    """A Trigger's subscription (`eventing.backend.Subscription`) over `records`, whose first `failures`
    fetches raise `BackendError` as an unreachable log does; once the records are given, a fetch waits."""

    def __init__(self, records: list[Record], failures: int = 0) -> None:
        self.records = records
        self.failures = failures
        self.fetches = 0
        self.acked: list[int] = []
        self.all_acked = asyncio.Event()
        self._count = len(records)

    async def fetch(self, limit: int) -> list[Record]:
        self.fetches += 1
        if self.failures:
            self.failures -= 1
            raise BackendError("the log is unreachable")
        if not self.records:
            await asyncio.Event().wait()  # nothing more: until the dispatcher is stopped
        given, self.records = self.records[:limit], self.records[limit:]
        return given

    def ack(self, record: Record) -> None:
        self.acked.append(record.position)
        if len(self.acked) == self._count:
            self.all_acked.set()

    async def close(self) -> None:
        pass


@pytest.fixture
async def deliverer() -> AsyncIterator[Deliverer]:
    async with client_session() as session:
        deliverer = Deliverer(session)
        yield deliverer
        deliverer.close()


async def run_until_acked(dispatcher: Dispatcher, log: FlakyLog) -> None:
    task = asyncio.create_task(dispatcher.run())
    try:
        await asyncio.wait_for(log.all_acked.wait(), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def trigger(url: str) -> TriggerSpec:
    return TriggerSpec("default", "t", "default", url)


async def test_a_failed_read_of_the_log_is_tried_again_with_back_off(deliverer: Deliverer) -> None:
    sub = Subscriber()
    server = await serve(sub)
    log = FlakyLog([Record(0, EVENT)], failures=2)

    async def no_reply(event: Event) -> None:
        raise AssertionError("nothing replies here")

    dispatcher = Dispatcher(trigger(str(server.make_url("/"))), log, deliverer, no_reply)
    started = time.monotonic()
    try:
        await run_until_acked(dispatcher, log)
    finally:
        await server.close()
    assert time.monotonic() - started >= FETCH_RETRY * 3 * 0.9  # waited 0.1 s, then 0.2 s
    assert log.fetches >= 3
    assert log.acked == [0]
    assert dispatcher.counts.delivered == 1
    assert dispatcher.counts.last_error == "reading the broker's log: the log is unreachable"
    assert [headers["ce-id"] for headers, _ in sub.got] == ["e1"]


async def test_a_reply_the_log_refuses_for_a_while_is_published_on_a_later_try(deliverer: Deliverer) -> None:
    sub = Subscriber(reply=True)
    server = await serve(sub)
    log = FlakyLog([Record(0, EVENT)])
    tries: list[str] = []

    async def reply(event: Event) -> None:
        tries.append(event.id)
        if len(tries) < 3:
            raise BackendError("the log is full")

    dispatcher = Dispatcher(trigger(str(server.make_url("/"))), log, deliverer, reply)
    try:
        await run_until_acked(dispatcher, log)
    finally:
        await server.close()
    assert tries == ["r1", "r1", "r1"]
    counts = dispatcher.counts
    assert (counts.delivered, counts.replies, counts.dropped_replies) == (1, 1, 0)
    assert counts.last_error == "publishing reply r1: the log is full"
    assert log.acked == [0]


async def test_a_reply_the_log_never_takes_is_counted_lost_and_its_event_acknowledged(
    deliverer: Deliverer, caplog: pytest.LogCaptureFixture
) -> None:
    sub = Subscriber(reply=True)
    server = await serve(sub)
    log = FlakyLog([Record(0, EVENT)])
    tries: list[float] = []

    async def reply(event: Event) -> None:
        tries.append(time.monotonic())
        raise BackendError("the log is full")

    dispatcher = Dispatcher(trigger(str(server.make_url("/"))), log, deliverer, reply)
    try:
        with caplog.at_level(logging.ERROR, logger="eventing.dispatcher"):
            await run_until_acked(dispatcher, log)
    finally:
        await server.close()
    assert len(tries) == REPLY_ATTEMPTS
    waits = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert all(wait >= FETCH_RETRY * 2**n * 0.9 for n, wait in enumerate(waits))  # 0.1 s, doubling
    counts = dispatcher.counts
    assert (counts.delivered, counts.replies, counts.dropped_replies) == (1, 0, 1)
    assert log.acked == [0]
    assert "reply r1 lost: the log is full" in caplog.text
