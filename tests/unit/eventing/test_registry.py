"""The Registry over the embedded store on real files: on the first spec after a start, the logs and positions
of objects deleted while the component was not running are forgotten (and retention frees what they held),
while everything the spec names stays, started or not; later specs do not sweep again."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from eventing.backend import BackendError, BrokerKey, TriggerKey
from eventing.delivery import Deliverer
from eventing.event import Event
from eventing.metrics import EventingMetrics
from eventing.registry import Registry
from eventing.session import client_session
from eventing.store import EventStore, StoreSubscription
from serving.contract.eventing import BrokerSpec, EventingSpec, TriggerSpec
from serving.events import EMBEDDED_CLASS, KAFKA_CLASS
from tests.unit.eventing.test_store import opened as stopped  # the store alone, as an earlier run left it

ORDERS = ("default", "orders")
ARCHIVE = ("default", "archive")
AUDIT = ("default", "audit")
BILLING = ("default", "billing")
SMALL: dict[str, Any] = {"segment_bytes": 2000}
"""Segments of two of `event`'s events, so that retention shows."""


def event(i: int) -> Event:
    return Event(
        {"id": f"e{i}", "source": "/orders", "specversion": "1.0", "type": "order.created"}, b"x" * 1000
    )


def broker(key: BrokerKey, broker_class: str = EMBEDDED_CLASS, *, ready: bool = True) -> BrokerSpec:
    return BrokerSpec(*key, broker_class, ready=ready)


def trigger(key: TriggerKey, on: BrokerKey = ORDERS) -> TriggerSpec:
    """A Trigger whose subscriber does not resolve: it holds its position and delivers nothing."""
    return TriggerSpec(key[0], key[1], on[1], None)


def position(root: Path, on: BrokerKey, key: TriggerKey) -> Path:
    return root / on[0] / on[1] / "triggers" / key[0] / f"{key[1]}.pos"


def segments(root: Path, on: BrokerKey = ORDERS) -> list[Path]:
    return sorted((root / on[0] / on[1]).glob("*.log"))


class RefusingStore(EventStore):
    """Real files, but the Triggers in `refused` cannot subscribe, as when their log cannot be read: the
    Registry keeps them pending."""

    def __init__(self, root: Path, refused: set[TriggerKey], **settings: Any) -> None:
        super().__init__(root, **settings)
        self.refused = refused

    async def subscribe(self, broker: BrokerKey, trigger: TriggerKey) -> StoreSubscription:
        if trigger in self.refused:
            raise BackendError("cannot read the log")
        return await super().subscribe(broker, trigger)


@asynccontextmanager
async def started(store: EventStore) -> AsyncIterator[Registry]:
    """The component after a restart on `store`'s files, before its first spec."""
    await store.start()
    async with client_session() as session:
        deliverer = Deliverer(session)
        registry = Registry(store, deliverer, EventingMetrics(CollectorRegistry()))
        try:
            yield registry
        finally:
            await registry.close()
            deliverer.close()


async def subscribe_all(store: EventStore, on: BrokerKey, *keys: TriggerKey) -> list[StoreSubscription]:
    return [await store.subscribe(on, key) for key in keys]


async def test_a_trigger_deleted_while_down_loses_its_position_and_the_segments_it_held_go(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with stopped(tmp_path, **SMALL) as store:
        _, billing = await subscribe_all(store, ORDERS, AUDIT, BILLING)
        for i in range(6):
            await store.publish(ORDERS, [event(i)])
        for record in await billing.fetch(6):
            billing.ack(record)
    assert len(segments(tmp_path)) == 3  # audit acked nothing: it holds every segment
    caplog.set_level(logging.INFO, logger="eventing.registry")
    async with started(EventStore(tmp_path, **SMALL)) as registry:
        await registry.apply(EventingSpec(brokers=(broker(ORDERS),), triggers=(trigger(BILLING),)))
        assert not position(tmp_path, ORDERS, AUDIT).exists()
        assert position(tmp_path, ORDERS, BILLING).exists()
        assert len(segments(tmp_path)) == 1  # billing passed them all
        assert list(registry.triggers) == [BILLING]
    assert "trigger default/audit is no longer on broker default/orders" in caplog.text


async def test_a_broker_deleted_while_down_loses_its_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with stopped(tmp_path) as store:
        await subscribe_all(store, ARCHIVE, AUDIT)
        await store.publish(ARCHIVE, [event(1)])
        await subscribe_all(store, ORDERS, BILLING)
    (tmp_path / "default" / "notes").mkdir()  # not a log: not the store's to remove
    caplog.set_level(logging.INFO, logger="eventing.registry")
    async with started(EventStore(tmp_path)) as registry:
        await registry.apply(EventingSpec(brokers=(broker(ORDERS),), triggers=(trigger(BILLING),)))
        assert not (tmp_path / "default" / "archive").exists()
        assert position(tmp_path, ORDERS, BILLING).exists()
        assert (tmp_path / "default" / "notes").is_dir()
    assert "broker default/archive no longer exists: its log is removed" in caplog.text


async def test_a_trigger_moved_while_down_loses_only_its_position_on_the_old_broker(tmp_path: Path) -> None:
    async with stopped(tmp_path) as store:
        await subscribe_all(store, ORDERS, AUDIT)
        await subscribe_all(store, ARCHIVE, BILLING)
    async with started(EventStore(tmp_path)) as registry:
        spec = EventingSpec(
            brokers=(broker(ORDERS), broker(ARCHIVE)),
            triggers=(trigger(AUDIT, on=ARCHIVE), trigger(BILLING, on=ARCHIVE)),
        )
        await registry.apply(spec)
        assert not position(tmp_path, ORDERS, AUDIT).exists()
        assert (tmp_path / "default" / "orders").is_dir()
        assert position(tmp_path, ARCHIVE, AUDIT).exists()
        assert position(tmp_path, ARCHIVE, BILLING).exists()


async def test_what_the_spec_names_stays_even_when_it_is_not_running(tmp_path: Path) -> None:
    paused = ("default", "paused")
    stream = ("default", "stream")
    waiting = ("default", "waiting")
    async with stopped(tmp_path) as store:
        await subscribe_all(store, ORDERS, AUDIT, BILLING)
        await subscribe_all(store, paused, waiting)
        await subscribe_all(store, stream, AUDIT)  # from when the Broker was of the embedded class
    held = {
        position(tmp_path, ORDERS, AUDIT),
        position(tmp_path, ORDERS, BILLING),
        position(tmp_path, paused, waiting),
        position(tmp_path, stream, AUDIT),
    }
    async with started(RefusingStore(tmp_path, {AUDIT})) as registry:
        spec = EventingSpec(
            brokers=(broker(ORDERS), broker(paused, ready=False), broker(stream, KAFKA_CLASS, ready=False)),
            triggers=(trigger(AUDIT), trigger(BILLING), trigger(waiting, on=paused)),
        )
        await registry.apply(spec)
        assert list(registry.pending) == [AUDIT]
        assert list(registry.triggers) == [BILLING]
        assert {path for path in held if path.exists()} == held


async def test_only_the_first_spec_sweeps(tmp_path: Path) -> None:
    async with stopped(tmp_path) as store:
        await subscribe_all(store, ORDERS, AUDIT, BILLING)
    store = EventStore(tmp_path)
    async with started(store) as registry:
        spec = EventingSpec(brokers=(broker(ORDERS),), triggers=(trigger(AUDIT), trigger(BILLING)))
        await registry.apply(spec)
        assert registry.synced
        await subscribe_all(store, ARCHIVE, AUDIT)  # not through the Registry: no spec names it
        await registry.apply(spec)
        assert position(tmp_path, ARCHIVE, AUDIT).exists()
        await registry.apply(EventingSpec(brokers=(broker(ORDERS),), triggers=(trigger(BILLING),)))
        assert not position(tmp_path, ORDERS, AUDIT).exists()  # a Trigger deleted while running, as before
        assert position(tmp_path, ARCHIVE, AUDIT).exists()


async def test_what_cannot_be_removed_is_a_warning_and_the_rest_is_swept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    retired = ("default", "retired")
    async with stopped(tmp_path) as store:
        await subscribe_all(store, ORDERS, AUDIT, BILLING)
        await subscribe_all(store, retired, AUDIT)
    (tmp_path / "default" / "orders" / f"{1 << 40:020d}.log").mkdir()  # the log cannot be opened any more
    async with started(EventStore(tmp_path)) as registry:
        await registry.apply(EventingSpec(brokers=(broker(ORDERS),), triggers=(trigger(BILLING),)))
        assert registry.synced
        assert list(registry.pending) == [BILLING]
        assert position(tmp_path, ORDERS, AUDIT).exists()
        assert not (tmp_path / "default" / "retired").exists()
    assert "trigger default/audit: its position in broker default/orders stays" in caplog.text
