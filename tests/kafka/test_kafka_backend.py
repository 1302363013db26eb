"""The Kafka backend against a real Kafka: events come back exactly as published, each Trigger reads the
whole log on its own, positions persist only up to the first record not acked, and nothing that `publish`
returned for is lost when Kafka restarts or crashes."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]  # aiokafka ships no py.typed
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]  # as above

from eventing.backend import Backend, BackendError, BrokerKey, Record, TriggerKey
from eventing.event import Event
from eventing.kafka import KafkaBackend, KafkaSubscription, topic_name
from tests.kafka.broker import KafkaBroker

pytestmark = pytest.mark.kafka

WAIT = 30.0
"""Seconds a test waits for records it expects; far beyond what a healthy run takes (well under one)."""


def event(n: int, *, data: bytes = b"", **extra: str) -> Event:
    attributes = {"id": f"e{n}", "source": "/tests/kafka", "specversion": "1.0", "type": "dev.test.kafka"}
    return Event({**attributes, **extra}, data)


def names() -> tuple[BrokerKey, TriggerKey]:
    suffix = uuid.uuid4().hex[:8]
    return ("default", f"broker-{suffix}"), ("default", f"trigger-{suffix}")


@pytest.fixture
async def backend(kafka_broker: KafkaBroker) -> AsyncIterator[KafkaBackend]:
    kafka = KafkaBackend(kafka_broker.bootstrap, timeout=20.0)
    protocol: Backend = kafka  # the type checker holds KafkaBackend to the Backend protocol here
    await protocol.start()
    try:
        yield kafka
    finally:
        await kafka.close()


async def receive(subscription: KafkaSubscription, count: int, *, ack: bool = True) -> list[Record]:
    """The next `count` records, each acked unless told not to; fails with what came if they do not."""
    records: list[Record] = []
    try:
        async with asyncio.timeout(WAIT):
            while len(records) < count:
                batch = await subscription.fetch(count - len(records))
                records += batch
                if ack:
                    for record in batch:
                        subscription.ack(record)
    except TimeoutError:
        raise AssertionError(f"{len(records)} of {count} records in {WAIT:g}s: {ids(records)}") from None
    return records


async def nothing_more(subscription: KafkaSubscription, seconds: float = 1.5) -> list[Record]:
    """What the subscription delivers within `seconds` (a test expects none)."""
    try:
        async with asyncio.timeout(seconds):
            return await subscription.fetch(100)
    except TimeoutError:
        return []


def ids(records: list[Record]) -> list[str]:
    return [record.event.id for record in records]


async def test_events_come_back_exactly_and_the_record_follows_the_binding(
    backend: KafkaBackend, kafka_broker: KafkaBroker
) -> None:
    broker, trigger = names()
    subscription = await backend.subscribe(broker, trigger)
    sent = [
        Event(
            {
                "id": "binary-1",
                "source": "urn:test:kafka",
                "specversion": "1.0",
                "type": "dev.test.binary",
                "datacontenttype": "application/octet-stream",
                "time": "2026-01-02T03:04:05.678Z",
                "subject": "ümlaut ✓",
                "partitionkey": "order-7",
                "myextension": "value with spaces",
            },
            bytes(range(256)) + b"\r\n\x00",
            {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        ),
        event(2, data=b'{"json": true}', datacontenttype="application/json"),
        event(3),
    ]
    await backend.publish(broker, sent)
    got = await receive(subscription, 3)
    assert sorted((r.event for r in got), key=lambda e: e.id) == sorted(sent, key=lambda e: e.id)

    # The record as any Kafka client (Knative's dispatcher, kcat) reads it: binary content mode.
    consumer = AIOKafkaConsumer(
        topic_name(broker), bootstrap_servers=kafka_broker.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        async with asyncio.timeout(WAIT):
            raw: list[Any] = []
            while len(raw) < 3:
                raw += [m for ms in (await consumer.getmany(timeout_ms=500)).values() for m in ms]
    finally:
        await consumer.stop()
    first = next(m for m in raw if dict(m.headers).get("ce_id") == b"binary-1")
    assert topic_name(broker) == f"knative-broker-default-{broker[1]}"
    assert first.key == b"order-7"
    assert first.value == sent[0].data
    headers = dict(first.headers)
    assert headers["content-type"] == b"application/octet-stream"
    assert headers["ce_subject"] == "ümlaut ✓".encode()
    assert headers["ce_myextension"] == b"value with spaces"
    assert "ce_datacontenttype" not in headers
    assert next(m for m in raw if dict(m.headers).get("ce_id") == b"e3").key is None


async def test_each_trigger_gets_every_event(backend: KafkaBackend) -> None:
    broker, first_trigger = names()
    second_trigger = (first_trigger[0], first_trigger[1] + "-2")
    first = await backend.subscribe(broker, first_trigger)
    second = await backend.subscribe(broker, second_trigger)
    sent = [event(n) for n in range(40)]
    await backend.publish(broker, sent[:20])
    await backend.publish(broker, sent[20:])
    got_first, got_second = await asyncio.gather(receive(first, 40), receive(second, 40))
    assert sorted(ids(got_first)) == sorted(ids(got_second)) == sorted(e.id for e in sent)


async def test_a_new_trigger_starts_at_the_end_and_keeps_that_start(backend: KafkaBackend) -> None:
    broker, trigger = names()
    await backend.publish(broker, [event(0)])
    subscription = await backend.subscribe(broker, trigger)
    # Closed before reading anything: the start is kept all the same.
    await subscription.close()
    await backend.publish(broker, [event(1)])
    subscription = await backend.subscribe(broker, trigger)
    await backend.publish(broker, [event(2)])
    got = await receive(subscription, 2)
    assert sorted(ids(got)) == ["e1", "e2"]
    assert await nothing_more(subscription) == []


async def test_positions_persist_up_to_the_first_record_not_acked(backend: KafkaBackend) -> None:
    broker, trigger = names()
    subscription = await backend.subscribe(broker, trigger)
    # One partition key: one partition, so the log order is the order of publishing.
    await backend.publish(broker, [event(n, partitionkey="one") for n in range(1, 5)])
    got = await receive(subscription, 4, ack=False)
    assert ids(got) == ["e1", "e2", "e3", "e4"]
    assert got[0].position < got[1].position < got[2].position < got[3].position
    subscription.ack(got[0])
    subscription.ack(got[2])
    await subscription.close()

    again = await backend.subscribe(broker, trigger)
    redelivered = await receive(again, 3)
    assert ids(redelivered) == ["e2", "e3", "e4"]
    assert [r.position for r in redelivered] == [r.position for r in got[1:]]
    await again.close()

    third = await backend.subscribe(broker, trigger)
    assert await nothing_more(third) == []


async def test_two_subscriptions_of_one_trigger_share_its_events(backend: KafkaBackend) -> None:
    broker, trigger = names()
    first = await backend.subscribe(broker, trigger)
    second = await backend.subscribe(broker, trigger)
    sent = {f"e{n}" for n in range(50)}
    await backend.publish(broker, [event(n) for n in range(50)])
    seen: list[str] = []
    by_first: set[str] = set()

    async def drain(subscription: KafkaSubscription, into: set[str] | None) -> None:
        while True:
            for record in await subscription.fetch(100):
                seen.append(record.event.id)
                if into is not None:
                    into.add(record.event.id)
                subscription.ack(record)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(drain(first, by_first)), group.create_task(drain(second, None))]
        async with asyncio.timeout(WAIT):
            while set(seen) != sent:
                await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
    assert set(seen) == sent
    assert 0 < len(by_first) < len(sent), "one member read every partition"


async def test_forget(backend: KafkaBackend, kafka_broker: KafkaBroker) -> None:
    broker, trigger = names()
    subscription = await backend.subscribe(broker, trigger)
    with pytest.raises(BackendError, match="still has members"):
        await backend.forget(broker, trigger)
    await backend.publish(broker, [event(1, partitionkey="k")])
    assert ids(await receive(subscription, 1, ack=False)) == ["e1"]
    await subscription.close()

    # A forgotten Trigger is a new one when it comes back: it starts at the end, e1 is not delivered again.
    await backend.forget(broker, trigger)
    await backend.forget(broker, trigger)  # already gone: no error
    subscription = await backend.subscribe(broker, trigger)
    await backend.publish(broker, [event(2, partitionkey="k")])
    assert ids(await receive(subscription, 1)) == ["e2"]
    await subscription.close()

    await backend.forget(broker, trigger)
    await backend.forget(broker)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    await admin.start()
    try:
        assert topic_name(broker) not in await admin.list_topics()
    finally:
        await admin.close()
    await backend.forget(broker)  # already gone: no error


async def test_publish_while_kafka_is_down_fails_in_bounded_time(kafka_broker: KafkaBroker) -> None:
    backend = KafkaBackend(kafka_broker.bootstrap, timeout=3.0)
    await backend.start()
    broker, trigger = names()
    try:
        subscription = await backend.subscribe(broker, trigger)
        await backend.publish(broker, [event(1)])
        await asyncio.to_thread(kafka_broker.stop)
        try:
            started = time.monotonic()
            with pytest.raises(BackendError, match="publishing 1 event"):
                await backend.publish(broker, [event(2)])
            assert time.monotonic() - started < 8.0
            # Whatever else needs Kafka says so in bounded time too, as a BackendError.
            started = time.monotonic()
            with pytest.raises(BackendError):
                await backend.subscribe(broker, (trigger[0], trigger[1] + "-new"))
            with pytest.raises(BackendError, match="connecting"):
                await KafkaBackend(kafka_broker.bootstrap, timeout=3.0).start()
            assert time.monotonic() - started < 12.0
        finally:
            await asyncio.to_thread(kafka_broker.start)
        # The same backend carries on once Kafka is back; the failed event may or may not have been stored.
        await backend.publish(broker, [event(3)])
        got = set(ids(await receive(subscription, 2)))
        got |= set(ids(await nothing_more(subscription, 1.0)))
        assert {"e1", "e3"} <= got <= {"e1", "e2", "e3"}
    finally:
        await backend.close()


# aiokafka leaves a connection unclosed when it connects to a broker that is going down and the handshake
# then fails (aio-libs/aiokafka#715, open): the socket is only closed when the collector finds it, which
# pytest reports as an unraisable ResourceWarning in whichever test runs then. It is aiokafka's, not the
# backend's (it happens with no failed publish), so this test, which stops Kafka under load, lets it pass;
# what it checks, that nothing published is lost, is asserted all the same.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("crash", [pytest.param(False, id="sigterm"), pytest.param(True, id="sigkill")])
async def test_a_kafka_restart_loses_nothing_published(
    backend: KafkaBackend, kafka_broker: KafkaBroker, crash: bool
) -> None:
    """Publishing and delivering go on while Kafka stops (or dies) and comes back; every event whose publish
    returned is delivered, some maybe twice."""
    broker, trigger = names()
    subscription = await backend.subscribe(broker, trigger)
    published: set[str] = set()
    failed = 0
    received: list[str] = []

    async def publisher() -> None:
        nonlocal failed
        for batch in range(60):
            events = [event(batch * 5 + n) for n in range(5)]
            try:
                await backend.publish(broker, events)
            except BackendError:
                failed += 1
            else:
                published.update(e.id for e in events)
            await asyncio.sleep(0.02)

    async def consumer() -> None:
        while True:
            try:
                records = await subscription.fetch(50)
            except BackendError:  # as a dispatcher does: try again a little later
                await asyncio.sleep(0.2)
                continue
            for record in records:
                received.append(record.event.id)
                subscription.ack(record)

    async with asyncio.TaskGroup() as group:
        publishing = group.create_task(publisher())
        consuming = group.create_task(consumer())
        await asyncio.sleep(0.5)
        await asyncio.to_thread(kafka_broker.kill if crash else kafka_broker.stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(kafka_broker.start)
        await publishing
        async with asyncio.timeout(WAIT):
            while not published <= set(received):
                await asyncio.sleep(0.1)
        consuming.cancel()
    lost = published - set(received)
    duplicates = len(received) - len(set(received))
    print(
        f"published {len(published)}, publishes failed {failed}, received {len(received)}, dups {duplicates}"
    )
    assert len(published) >= 200, f"only {len(published)} publishes succeeded ({failed} failed)"
    assert not lost
    assert set(received) <= {f"e{n}" for n in range(300)}
    gc.collect()  # what aiokafka left unclosed is found now, inside this test (see above)
