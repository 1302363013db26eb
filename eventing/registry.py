"""Every Broker and Trigger the component serves, kept in step with the platform's Eventing objects: each
Broker's backend (the embedded store, or a Kafka cluster), and one running `Dispatcher` per Trigger.

A Trigger or Broker that disappears from the objects is forgotten by its backend (its position, its log);
one whose subscriber does not resolve yet keeps its position, so its events wait rather than being lost. What
the embedded store still holds of objects deleted while the component was not running is forgotten when the
first objects arrive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from eventing.backend import Backend, BackendError, BrokerKey, TriggerKey
from eventing.delivery import Deliverer
from eventing.dispatcher import Dispatcher
from eventing.event import Event
from eventing.metrics import EventingMetrics
from eventing.store import EventStore
from serving.contract.eventing import BrokerSpec, EventingSpec, TriggerSpec
from serving.events import KAFKA_CLASS

log = logging.getLogger(__name__)


PENDING_RETRY = 1.0
PENDING_RETRY_MAX = 30.0
"""Back-off between tries to start a Trigger whose log could not be read: from 1 s, doubling, at most 30 s."""


class UnknownBroker(LookupError):
    pass


@dataclass(slots=True)
class _Running:
    dispatcher: Dispatcher
    task: asyncio.Task[None]
    broker: BrokerSpec


class Registry:
    def __init__(
        self,
        embedded: Backend,
        deliverer: Deliverer,
        metrics: EventingMetrics,
        *,
        kafka: Callable[[BrokerSpec], Backend] | None = None,
    ) -> None:
        self._embedded = embedded
        self._kafka_factory = kafka
        self._kafka: dict[tuple[str | None, int, int], Backend] = {}
        self._deliverer = deliverer
        self._metrics = metrics
        self.brokers: dict[BrokerKey, BrokerSpec] = {}
        self.triggers: dict[TriggerKey, _Running] = {}
        self.accepted: dict[BrokerKey, int] = {}
        self.synced = False
        self.pending: dict[TriggerKey, tuple[BrokerSpec, TriggerSpec, str]] = {}
        """Triggers whose start failed, with why: `run` tries them again."""
        self._lock = asyncio.Lock()
        self._kafka_lock = asyncio.Lock()
        self._retry = asyncio.Event()
        self._stopped = False

    async def backend(self, broker: BrokerSpec) -> Backend:
        """The embedded store, or the Kafka backend of the Broker's cluster (started on first use)."""
        if _in_embedded_store(broker):
            return self._embedded
        if not broker.ready:
            raise BackendError(f"broker {broker.namespace}/{broker.name} is not ready")
        key = (broker.bootstrap_servers, broker.partitions, broker.replication_factor)
        backend = self._kafka.get(key)
        if backend is not None:
            return backend
        async with self._kafka_lock:  # one backend per cluster, however many first uses race for it
            backend = self._kafka.get(key)
            if backend is None:
                if self._kafka_factory is None:
                    raise BackendError("the Kafka backend is not available in this process")
                try:
                    backend = self._kafka_factory(broker)
                    await backend.start()
                except (ValueError, OSError) as exc:
                    raise BackendError(f"Kafka at {broker.bootstrap_servers}: {exc}") from exc
                self._kafka[key] = backend
        return backend

    async def publish(self, key: BrokerKey, events: list[Event]) -> None:
        """Store events in a Broker's log; `UnknownBroker`, or `BackendError` when they could not be kept."""
        broker = self.brokers.get(key)
        if broker is None:
            raise UnknownBroker(f"broker {key[0]}/{key[1]} not found")
        await (await self.backend(broker)).publish(key, events)
        self._count(key, len(events))

    def store(self, key: BrokerKey, events: list[Event]) -> asyncio.Future[None]:
        """`publish`, started now: the future is done once the events are kept (or failed with the backend's
        error). Cancelling it, as a producer that goes away does, cancels only the waiting: the events are
        stored and counted all the same (a shield of its own). An open embedded log takes them without a
        task."""
        broker = self.brokers.get(key)
        if broker is None:
            raise UnknownBroker(f"broker {key[0]}/{key[1]} not found")
        stored = self._embedded.submit(key, events) if _in_embedded_store(broker) and events else None
        if stored is None:
            return asyncio.shield(asyncio.ensure_future(self.publish(key, events)))
        count = len(events)
        told: asyncio.Future[None] = stored.get_loop().create_future()

        def settled(stored: asyncio.Future[None]) -> None:
            error = stored.exception()  # the store never cancels it: nobody else holds it
            if error is None:
                self._count(key, count)
            if told.done():  # its waiter went away
                return
            if error is None:
                told.set_result(None)
            else:
                told.set_exception(error)

        stored.add_done_callback(settled)
        return told

    def _count(self, key: BrokerKey, events: int) -> None:
        self.accepted[key] = self.accepted.get(key, 0) + events

    async def apply(self, spec: EventingSpec) -> None:
        """Make `spec` what runs: new Brokers and Triggers start, changed ones update, removed ones go.

        Only an object absent from `spec` is forgotten (its log, its position). A Broker that is not ready (a
        Kafka Broker whose ConfigMap is missing) keeps its log and its Triggers' positions: they stop and
        start again, where they were, once it is ready. The first `spec` also has the embedded store forget
        what it holds of objects deleted while the component was not running (`_sweep`).
        """
        async with self._lock:
            if self._stopped:
                return
            brokers = {b.key: b for b in spec.brokers}
            triggers = {t.key: t for t in spec.triggers}
            for key, running in list(self.triggers.items()):
                wanted = triggers.get(key)
                broker = brokers.get((key[0], wanted.broker)) if wanted is not None else None
                if wanted is None or wanted.broker != running.broker.name:
                    await self._stop(key, forget=True)  # deleted, or moved: its position in this log is moot
                elif broker is None or not broker.ready or broker != running.broker:
                    await self._stop(key, forget=False)
            for key, broker in list(self.brokers.items()):
                if key not in brokers:
                    await self._forget(broker)
            self.brokers = brokers
            self.pending = {}
            for key, wanted in triggers.items():
                broker = brokers.get((wanted.namespace, wanted.broker))
                if broker is None or not broker.ready:
                    continue  # not ready: its Broker does not exist or is not ready (shown by the platform)
                current = self.triggers.get(key)
                if current is not None:
                    current.dispatcher.update(wanted)
                    continue
                await self._start(broker, wanted)
            if not self.synced:
                await self._sweep(brokers, triggers)
            self.synced = True
            self._retry.set()

    async def run(self) -> None:
        """Start again, with back-off, the Triggers whose log could not be read when they were applied (Kafka
        unreachable); runs until cancelled."""
        delay = PENDING_RETRY
        while True:
            await self._retry.wait()
            self._retry.clear()
            while self.pending:
                await asyncio.sleep(delay)
                delay = min(delay * 2, PENDING_RETRY_MAX)
                async with self._lock:
                    for key, (broker, spec, _) in list(self.pending.items()):
                        if self.brokers.get(broker.key) == broker and key not in self.triggers:
                            del self.pending[key]
                            await self._start(broker, spec)
            delay = PENDING_RETRY

    async def _start(self, broker: BrokerSpec, spec: TriggerSpec) -> None:
        try:
            subscription = await (await self.backend(broker)).subscribe(broker.key, spec.key)
        except BackendError as exc:
            log.error("trigger %s/%s cannot read broker %s/%s: %s", *spec.key, *broker.key, exc)
            self.pending[spec.key] = (
                broker,
                spec,
                f"cannot read broker {broker.namespace}/{broker.name}: {exc}",
            )
            return
        dispatcher = Dispatcher(
            spec,
            subscription,
            self._deliverer,
            lambda event: self.publish(broker.key, [event]),
            observe=self._metrics.observe,
        )
        task = asyncio.create_task(dispatcher.run(), name=f"trigger {spec.namespace}/{spec.name}")
        task.add_done_callback(_log_failure)
        self.triggers[spec.key] = _Running(dispatcher, task, broker)
        log.info("trigger %s/%s delivers from broker %s/%s", *spec.key, *broker.key)

    async def _stop(self, key: TriggerKey, *, forget: bool) -> None:
        running = self.triggers.pop(key)
        running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)
        if forget:
            try:
                await (await self.backend(running.broker)).forget(running.broker.key, key)
            except BackendError as exc:
                log.warning("trigger %s/%s: its position could not be removed: %s", *key, exc)

    async def _forget(self, broker: BrokerSpec) -> None:
        try:
            await (await self.backend(broker)).forget(broker.key)
        except BackendError as exc:
            log.warning("broker %s/%s: its log could not be removed: %s", *broker.key, exc)

    async def _sweep(
        self, brokers: dict[BrokerKey, BrokerSpec], triggers: dict[TriggerKey, TriggerSpec]
    ) -> None:
        """Forget the logs and positions the embedded store holds of objects absent from the first spec: they
        were deleted while the component was not running, so no `apply` saw them go, and a stale position
        would hold its Broker's segments on disk forever.

        A Broker named in the spec keeps its log whatever its class or readiness (a Kafka-class one is left
        alone entirely: nothing is published to its embedded log). In an embedded-class one, a Trigger's
        position stays only if the spec has that Trigger on that Broker, started, pending or waiting; one
        that moved to another Broker is forgotten here, as `apply` forgets it while running. The Kafka
        backends are never swept: a cluster may be shared with objects this component does not know. A
        failure is logged, and the rest is swept all the same.
        """
        store = self._embedded
        if not isinstance(store, EventStore):
            return
        try:
            held = await store.held()
        except (OSError, BackendError) as exc:
            log.warning("cannot list the embedded Brokers' logs to remove those of deleted objects: %s", exc)
            return
        wanted = {((t.namespace, t.broker), key) for key, t in triggers.items()}
        for broker_key, positions in sorted(held.items()):
            broker = brokers.get(broker_key)
            if broker is None:
                try:
                    await store.forget(broker_key)
                except (OSError, BackendError) as exc:
                    log.warning("broker %s/%s no longer exists, but its log stays: %s", *broker_key, exc)
                else:
                    log.info("broker %s/%s no longer exists: its log is removed", *broker_key)
                continue
            if broker.broker_class == KAFKA_CLASS:
                continue
            for trigger_key in sorted(positions):
                if (broker_key, trigger_key) in wanted:
                    continue
                try:
                    await store.forget(broker_key, trigger_key)
                except (OSError, BackendError) as exc:
                    log.warning(
                        "trigger %s/%s: its position in broker %s/%s stays: %s",
                        *trigger_key,
                        *broker_key,
                        exc,
                    )
                else:
                    log.info(
                        "trigger %s/%s is no longer on broker %s/%s: its position there is removed",
                        *trigger_key,
                        *broker_key,
                    )

    async def stop_delivering(self) -> None:
        """Stop every Trigger (deliveries in flight are not acknowledged: delivered again after a restart);
        the logs stay open for the ingress until `close`."""
        async with self._lock:
            self._stopped = True
            for key in list(self.triggers):
                await self._stop(key, forget=False)

    async def close(self) -> None:
        await self.stop_delivering()
        for backend in self._kafka.values():
            await backend.close()
        await self._embedded.close()

    def status(self) -> dict[str, object]:
        """Per Broker its accepted count, per Trigger its delivery counts: `serving status` shows them."""
        return {
            "brokers": [
                {
                    "namespace": b.namespace,
                    "name": b.name,
                    "class": b.broker_class,
                    "accepted": self.accepted.get(b.key, 0),
                }
                for b in self.brokers.values()
            ],
            "triggers": [
                {
                    "namespace": key[0],
                    "name": key[1],
                    "broker": running.broker.name,
                    "subscriber": running.dispatcher.spec.subscriber,
                    "delivered": running.dispatcher.counts.delivered,
                    "retried": running.dispatcher.counts.retried,
                    "dead_lettered": running.dispatcher.counts.dead_lettered,
                    "dropped": running.dispatcher.counts.dropped,
                    "replies": running.dispatcher.counts.replies,
                    "in_flight": running.dispatcher.counts.in_flight,
                    "last_error": running.dispatcher.counts.last_error,
                }
                for key, running in self.triggers.items()
            ]
            + [
                {"namespace": key[0], "name": key[1], "broker": broker.name, "last_error": why}
                for key, (broker, _, why) in self.pending.items()
            ],
        }


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped: %r", task.get_name(), task.exception())


def _in_embedded_store(broker: BrokerSpec) -> bool:
    """Whether the Broker's events are kept by the embedded store (every class but Kafka's)."""
    return broker.broker_class != KAFKA_CLASS
