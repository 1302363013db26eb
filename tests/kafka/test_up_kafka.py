"""The Kafka Broker class through `serving up`, against a real Kafka: events posted to the Broker's ingress
reach the Trigger's Service; Kafka stopped and started again in the middle of the flow loses nothing that the
ingress acknowledged; and the topic and consumer group are Knative's names."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]  # aiokafka has no py.typed

from tests.integration.conftest import ServingUp, eventually
from tests.integration.test_up_eventing import ZERO, post_event, received, sink_service, trigger
from tests.kafka.broker import KafkaBroker

pytestmark = pytest.mark.kafka


def kafka_broker_yaml(bootstrap: str) -> str:
    return f"""\
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: kafka-broker-config
data:
  bootstrap.servers: "{bootstrap}"
  default.topic.partitions: "3"
  default.topic.replication.factor: "1"
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
  annotations:
    eventing.knative.dev/broker.class: Kafka
spec:
  config:
    apiVersion: v1
    kind: ConfigMap
    name: kafka-broker-config
"""


@pytest.fixture
async def up(tmp_path: Path, kafka_broker: KafkaBroker) -> AsyncIterator[ServingUp]:
    yaml = tmp_path / "kafka.yaml"
    yaml.write_text(
        sink_service(tmp_path)
        + kafka_broker_yaml(kafka_broker.bootstrap)
        + trigger("all", "/all")
        + trigger("typed", "/typed", filters="\n  filter:\n    attributes:\n      type: wanted")
    )
    running = ServingUp(tmp_path, [yaml], ZERO)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def test_events_flow_through_a_kafka_broker(
    up: ServingUp, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession() as session:
        statuses = [
            await post_event(session, up, "wanted" if i % 2 else "other", id_=f"k{i}") for i in range(20)
        ]
    assert statuses == [202] * 20

    def paths() -> Counter[str]:
        return Counter(e["path"] for e in received(tmp_path))

    async def delivered() -> bool:
        return paths()["/all"] >= 20 and paths()["/typed"] >= 10

    await eventually(delivered, 60, f"every event delivered from Kafka: {paths()}")
    typed = {e["id"] for e in received(tmp_path) if e["path"] == "/typed"}
    assert typed == {f"k{i}" for i in range(1, 20, 2)}  # only the Trigger's type

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    await admin.start()
    try:
        topics = await admin.list_topics()
        groups = {group[0] for group in await admin.list_consumer_groups()}
    finally:
        await admin.close()
    assert "knative-broker-default-default" in topics
    assert {"knative-trigger-default-all", "knative-trigger-default-typed"} <= groups


@pytest.mark.timeout(300)
async def test_kafka_restart_mid_flow_loses_nothing_acknowledged(
    up: ServingUp, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    accepted: list[str] = []
    refused = 0
    async with aiohttp.ClientSession() as session:

        async def produce(start: int, count: int) -> None:
            nonlocal refused
            for i in range(start, start + count):
                if await post_event(session, up, "t", id_=f"r{i}") == 202:
                    accepted.append(f"r{i}")
                else:
                    refused += 1  # 503 while Kafka is down: the producer was told, nothing was acknowledged

        await produce(0, 200)
        restart = asyncio.create_task(asyncio.to_thread(kafka_broker.stop))
        await asyncio.gather(*(produce(200 + 10 * n, 10) for n in range(10)))  # through the stop
        await restart
        await asyncio.to_thread(kafka_broker.start)
        await produce(300, 200)

    async def everything() -> bool:
        ids = {e["id"] for e in received(tmp_path) if e["path"] == "/all"}
        return ids >= set(accepted)

    await eventually(
        everything, 120, "every acknowledged event delivered after the Kafka restart", interval=0.5
    )
    counts = Counter(e["id"] for e in received(tmp_path) if e["path"] == "/all")
    duplicates = sum(n - 1 for n in counts.values())
    print(json.dumps({"accepted": len(accepted), "refused": refused, "duplicates": duplicates}))
    assert len(accepted) >= 400
