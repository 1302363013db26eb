"""The test Kafka itself: a record produced with acks from all replicas is consumed back, and is still there
after a clean restart and after a crash of the broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]  # no py.typed
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]  # as above

from tests.kafka.broker import KafkaBroker

pytestmark = pytest.mark.kafka


async def _create_topic(bootstrap: str) -> str:
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(topic, 1, 1)])
        assert [code for _, code, *_ in response.topic_errors] == [0]
    finally:
        await admin.close()
    return topic


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"k", headers=[("h", b"\x00\xff")])
    finally:
        await producer.stop()


async def _consume(
    bootstrap: str, topic: str, count: int
) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """The first `count` records of `topic` as (key, value, headers), read from the start with no group."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    got: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
    try:
        async with asyncio.timeout(30):
            while len(got) < count:
                batches = await consumer.getmany(timeout_ms=500)
                got += [(m.key, m.value, list(m.headers)) for ms in batches.values() for m in ms]
    finally:
        await consumer.stop()
    return got


async def test_a_produced_record_is_consumed(kafka_broker: KafkaBroker) -> None:
    topic = await _create_topic(kafka_broker.bootstrap)
    await _produce(kafka_broker.bootstrap, topic, [b"hello"])
    assert await _consume(kafka_broker.bootstrap, topic, 1) == [(b"k", b"hello", [("h", b"\x00\xff")])]


@pytest.mark.parametrize("crash", [pytest.param(False, id="sigterm"), pytest.param(True, id="sigkill")])
async def test_records_survive_a_restart(kafka_broker: KafkaBroker, crash: bool) -> None:
    topic = await _create_topic(kafka_broker.bootstrap)
    await _produce(kafka_broker.bootstrap, topic, [b"before-1", b"before-2"])
    port = kafka_broker.port
    await asyncio.to_thread(kafka_broker.kill if crash else kafka_broker.stop)
    assert not kafka_broker.running
    await asyncio.to_thread(kafka_broker.start)
    assert kafka_broker.port == port
    await _produce(kafka_broker.bootstrap, topic, [b"after"])
    values = [value for _, value, _ in await _consume(kafka_broker.bootstrap, topic, 3)]
    assert values == [b"before-1", b"before-2", b"after"]
