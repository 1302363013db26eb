"""The Kafka backend of Brokers: one topic per Broker, one consumer group per Trigger, each event a record in
the CloudEvents Kafka binding's binary content mode, named and laid out as Knative's Kafka broker does it.

aiokafka ships no type information, so its objects are `Any` here and stay inside this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiokafka import (  # type: ignore[import-untyped]  # aiokafka ships no py.typed
    AIOKafkaClient,
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerStoppedError,
    OffsetAndMetadata,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]  # as above
from aiokafka.errors import KafkaError, for_code  # type: ignore[import-untyped]  # as above
from aiokafka.protocol.admin import DeleteGroupsRequest  # type: ignore[import-untyped]  # as above

from eventing.backend import BackendError, BrokerKey, Record, TriggerKey
from eventing.event import Event

log = logging.getLogger(__name__)

MAX_POLL_INTERVAL_MS: Final = 24 * 3600 * 1000
"""How long a consumer may go without fetching before it leaves its group: a day, beyond any delivery hold
(aiokafka's default, 5 minutes, is the overload patience of one event)."""

TOPIC_PREFIX: Final = "knative-broker-"
"""A Broker's topic is `knative-broker-<namespace>-<name>`: the Knative Kafka broker's default template."""
GROUP_PREFIX: Final = "knative-trigger-"
"""A Trigger's consumer group is `knative-trigger-<namespace>-<name>`, as in Knative."""
ATTRIBUTE_PREFIX: Final = "ce_"
"""Each context attribute travels as the header `ce_<name>` (the CloudEvents Kafka binding, binary mode)."""
CONTENT_TYPE: Final = "content-type"
"""`datacontenttype` travels as this header, not as `ce_datacontenttype` (the binding again)."""
HEADER_PREFIX: Final = "header_"
"""Each of `Event.headers` travels as `header_<name>`: no binding header starts so (attributes start with
`ce_`, the content type is `content-type`), so neither can be mistaken for the other."""
PARTITION_KEY: Final = "partitionkey"
"""The partitioning extension: when set, the record's key, so that its events keep their order."""
PARTITION_SHIFT: Final = 48
"""`Record.position` is `partition << 48 | offset`: 2**48 offsets per partition is more than a partition ever
holds, and 15 bits of partitions keep the position within a signed 64-bit integer."""
COMMIT_INTERVAL: Final = 0.15
"""Seconds between commits of a Subscription's position while acks arrive: a crash re-delivers at most this
long's worth of acked records, and the group coordinator sees a handful of commits per second."""
CLIENT_ID: Final = "serving-eventing"

# Broker error codes that `forget` takes as done: the group or the topic is already gone.
GROUP_ID_NOT_FOUND: Final = 69
UNKNOWN_TOPIC_OR_PARTITION: Final = 3
TOPIC_ALREADY_EXISTS: Final = 36
NON_EMPTY_GROUP: Final = 68
GROUP_COORDINATOR: Final = 0
"""The coordinator type of FindCoordinator that names a consumer group's coordinator."""


def topic_name(broker: BrokerKey) -> str:
    namespace, name = broker
    return f"{TOPIC_PREFIX}{namespace}-{name}"


def group_id(trigger: TriggerKey) -> str:
    namespace, name = trigger
    return f"{GROUP_PREFIX}{namespace}-{name}"


def encode(event: Event) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of `event`'s record; `decode` gives the same event back."""
    headers: list[tuple[str, bytes]] = []
    for name, value in event.attributes.items():
        header = CONTENT_TYPE if name == "datacontenttype" else ATTRIBUTE_PREFIX + name
        headers.append((header, value.encode()))
    headers += [(HEADER_PREFIX + name, value.encode()) for name, value in event.headers.items()]
    key = event.attributes.get(PARTITION_KEY)
    return (None if key is None else key.encode()), event.data, headers


def decode(value: bytes | None, headers: Sequence[tuple[str, bytes | None]]) -> Event:
    """The event of a record. Headers that are not valid UTF-8 (only a foreign producer writes them) are
    decoded with replacement characters rather than stopping the Trigger on a record it can never read."""
    attributes: dict[str, str] = {}
    extra: dict[str, str] = {}
    for name, raw in headers:
        text = (raw or b"").decode("utf-8", "replace")
        if name.startswith(ATTRIBUTE_PREFIX):
            attributes[name[len(ATTRIBUTE_PREFIX) :]] = text
        elif name.lower() == CONTENT_TYPE:
            attributes["datacontenttype"] = text
        elif name.startswith(HEADER_PREFIX):
            extra[name[len(HEADER_PREFIX) :]] = text
    return Event(attributes, value or b"", extra)


def position(partition: int, offset: int) -> int:
    """Increases with the offset within a partition; Kafka orders nothing across partitions, nor does this."""
    return partition << PARTITION_SHIFT | offset


def split(position: int) -> tuple[int, int]:
    """(partition, offset) of a `position`."""
    return position >> PARTITION_SHIFT, position & ((1 << PARTITION_SHIFT) - 1)


def _failure(doing: str, exc: BaseException) -> BackendError:
    detail = str(exc) or type(exc).__name__
    return BackendError(f"kafka: {doing} failed: {type(exc).__name__}: {detail}")


@dataclass(slots=True)
class _Partition:
    """A Subscription's bookkeeping for one assigned partition: offsets fetched and not yet passed by the
    committed position. The position to commit is the first fetched offset not acked, or past the last fetched
    one when all are acked."""

    inflight: deque[int] = field(default_factory=deque)
    acked: set[int] = field(default_factory=set)
    next_offset: int | None = None
    """Past the last record fetched in this assignment (or where it starts); None while unknown."""
    committed: int | None = None

    def fetched(self, offset: int) -> None:
        if self.next_offset is not None and offset < self.next_offset:
            # The consumer went back (its position was reset): start the bookkeeping over from here.
            self.inflight.clear()
            self.acked.clear()
        self.inflight.append(offset)
        self.next_offset = offset + 1

    def ack(self, offset: int) -> None:
        # Only offsets fetched in this assignment count: an ack from before a rebalance is dropped, and its
        # record is delivered again (at least once).
        if self.inflight and self.next_offset is not None and self.inflight[0] <= offset < self.next_offset:
            self.acked.add(offset)

    def committable(self) -> int | None:
        while self.inflight and self.inflight[0] in self.acked:
            self.acked.discard(self.inflight.popleft())
        return self.inflight[0] if self.inflight else self.next_offset


class KafkaSubscription:
    """One Trigger's reader: a member of the Trigger's consumer group, which shares the topic's partitions
    among the group's members. Its position is committed by a background task every `COMMIT_INTERVAL` and on
    close, per partition up to the first record not acked. Fetching and acking happen on one event loop."""

    def __init__(
        self, consumer: Any, topic: str, timeout: float, on_close: Callable[[KafkaSubscription], None]
    ):
        self._consumer = consumer
        self._topic = topic
        self._timeout = timeout
        self._on_close = on_close
        self._partitions: dict[int, _Partition] = {}
        self._committer: asyncio.Task[None] | None = None
        self._closed = False

    async def _start(self) -> None:
        """Join the group and wait until this member has partitions and knows where it reads each from; then
        commit those positions, so that a new Trigger's start (the log's end now) is kept even if it closes
        before acking anything, and a record published after `subscribe` returns is delivered."""
        await self._consumer.start()
        async with asyncio.timeout(self._timeout):
            while True:
                assigned = self._consumer.assignment()
                try:
                    starts = {tp: await self._consumer.position(tp) for tp in assigned}
                    if starts:
                        await self._consumer.commit(
                            {tp: OffsetAndMetadata(o, "") for tp, o in starts.items()}
                        )
                        break
                except KafkaError as exc:  # a rebalance came between (IllegalStateError): ask again
                    log.debug("subscription of %s is not settled yet: %r", self._topic, exc)
                await asyncio.sleep(0.05)
        for tp, offset in starts.items():
            self._partitions[tp.partition] = _Partition(next_offset=offset, committed=offset)
        self._committer = asyncio.create_task(self._commit_loop(), name=f"commit {self._topic}")

    async def fetch(self, limit: int) -> list[Record]:
        while True:
            if self._closed:
                raise BackendError("kafka: the subscription is closed")
            if self._committer is not None and self._committer.done() and not self._committer.cancelled():
                error = self._committer.exception()
                raise BackendError(f"kafka: committing the position stopped: {error!r}") from error
            try:
                batches = await self._consumer.getmany(timeout_ms=1000, max_records=limit)
            except (KafkaError, ConsumerStoppedError) as exc:  # stopped: closed while fetching
                raise _failure(f"fetching from {self._topic}", exc) from exc
            records = []
            for tp, messages in batches.items():
                state = self._partitions.setdefault(tp.partition, _Partition())
                for message in messages:
                    state.fetched(message.offset)
                    event = decode(message.value, message.headers)
                    records.append(Record(position(tp.partition, message.offset), event))
            if records:
                return records

    def ack(self, record: Record) -> None:
        partition, offset = split(record.position)
        state = self._partitions.get(partition)
        if state is not None:
            state.ack(offset)

    async def close(self) -> None:
        """Stop committing, commit once more as far as acks allow, and leave the group (its partitions go to
        the other members at once rather than after a session timeout)."""
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        if self._committer is not None:
            self._committer.cancel()
            await asyncio.wait([self._committer])
        try:
            async with asyncio.timeout(self._timeout):
                await self._commit()
        except (KafkaError, TimeoutError) as exc:
            log.warning(
                "kafka: the last commit of %s failed; its records since are delivered again: %r",
                self._topic,
                exc,
            )
        try:
            async with asyncio.timeout(self._timeout):
                await self._consumer.stop()
        except TimeoutError:
            log.warning("kafka: the consumer of %s did not stop within %gs", self._topic, self._timeout)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL)
            try:
                await self._commit()
            # Kafka down, or a rebalance (CommitFailedError, IllegalStateError): the next round retries.
            except KafkaError as exc:
                log.info("kafka: commit of %s failed, retrying: %r", self._topic, exc)

    async def _commit(self, partitions: set[int] | None = None) -> None:
        assigned = {tp.partition for tp in self._consumer.assignment()}
        offsets: dict[Any, Any] = {}
        targets: list[tuple[_Partition, int]] = []
        for partition, state in self._partitions.items():
            if partition not in assigned or (partitions is not None and partition not in partitions):
                continue
            offset = state.committable()
            if offset is not None and offset != state.committed:
                offsets[TopicPartition(self._topic, partition)] = OffsetAndMetadata(offset, "")
                targets.append((state, offset))
        if not offsets:
            return
        await self._consumer.commit(offsets)
        for state, offset in targets:
            state.committed = offset

    async def _revoked(self, partitions: set[int]) -> None:
        """Before partitions go to another member: commit what was acked in them and forget them."""
        try:
            await self._commit(partitions)
        except KafkaError as exc:
            log.info(
                "kafka: commit of %s before a rebalance failed; re-delivery follows: %r", self._topic, exc
            )
        for partition in partitions:
            self._partitions.pop(partition, None)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka's class is untyped
    def __init__(self, subscription: KafkaSubscription) -> None:
        self._subscription = subscription

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._subscription._revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """Nothing to do: a partition's bookkeeping starts with its first fetched record."""


class KafkaBackend:
    """A Broker's log in Kafka. One idempotent producer (acks from all in-sync replicas) serves every Broker;
    each `subscribe` makes its own consumer. `timeout` bounds every wait on Kafka, so that a Kafka that is
    down shows as `BackendError` (a 503 at the ingress) within that time.

    Defaults are Knative's Kafka broker's: 10 partitions, replication factor 1 (one broker). Durable means as
    durable as Kafka makes it: with one replica an acknowledged record survives the broker's crash (it is in
    the OS's page cache) but not the machine's; Kafka in production keeps 3 replicas for that."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        partitions: int = 10,
        replication_factor: int = 1,
        timeout: float = 30.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.timeout = timeout
        self._producer: Any = None
        self._admin: Any = None
        self._client: Any = None
        self._topics: set[str] = set()
        self._topic_lock = asyncio.Lock()
        self._subscriptions: set[KafkaSubscription] = set()
        self._producer_lock = asyncio.Lock()
        self._stopping: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Connect the producer and the admin clients; a Kafka that cannot be reached is a `BackendError`."""
        if self._producer is not None:
            return
        request_timeout_ms = int(self.timeout * 1000)
        self._producer = self._new_producer()
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id=CLIENT_ID,
            request_timeout_ms=request_timeout_ms,
        )
        # The admin client has no call to delete a consumer group; the plain client sends that request.
        self._client = AIOKafkaClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id=CLIENT_ID,
            request_timeout_ms=request_timeout_ms,
        )
        try:
            async with asyncio.timeout(self.timeout):
                await self._producer.start()
                await self._admin.start()
                await self._client.bootstrap()
        except (KafkaError, TimeoutError) as exc:
            await self.close()
            raise _failure(f"connecting to {self.bootstrap_servers}", exc) from exc

    def _new_producer(self) -> Any:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=CLIENT_ID,
            acks="all",
            enable_idempotence=True,
            # Also how long a record may wait for delivery: a Kafka that is down fails a publish in this time.
            request_timeout_ms=int(self.timeout * 1000),
        )

    async def _producer_now(self) -> Any:
        """The producer, made anew after a failed publish (see `_discard_producer`)."""
        self._started(self._admin)
        async with self._producer_lock:
            if self._producer is None:
                producer = self._new_producer()
                try:
                    async with asyncio.timeout(self.timeout):
                        await producer.start()
                except (KafkaError, TimeoutError) as exc:
                    with contextlib.suppress(Exception):
                        await producer.stop()
                    raise _failure(f"connecting to {self.bootstrap_servers}", exc) from exc
                self._producer = producer
            return self._producer

    def _discard_producer(self, producer: Any) -> None:
        """After a failed publish the idempotent producer's sequence numbers may be ahead of what Kafka
        stored (a send timed out but stays counted), and every later send would fail with
        OutOfOrderSequence: the next publish gets a new producer (a new producer id), this one is stopped."""
        if self._producer is producer:
            self._producer = None
            task = asyncio.create_task(self._stop_quietly(producer))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def _stop_quietly(self, producer: Any) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await producer.stop()
        except (KafkaError, TimeoutError, OSError) as exc:
            log.debug("kafka: a discarded producer did not stop cleanly: %r", exc)

    async def close(self) -> None:
        """Close every subscription (committing its position), then flush the producer: a publish that
        returned is durable already, one in flight finishes or times out."""
        for subscription in list(self._subscriptions):
            await subscription.close()
        producer, admin, client = self._producer, self._admin, self._client
        self._producer = self._admin = self._client = None
        await asyncio.gather(*self._stopping, return_exceptions=True)
        try:
            async with asyncio.timeout(self.timeout):
                if producer is not None:
                    await producer.stop()
        except (KafkaError, TimeoutError) as exc:
            log.warning("kafka: the producer did not flush within %gs: %r", self.timeout, exc)
        if admin is not None:
            await admin.close()
        if client is not None:
            await client.close()

    def submit(self, broker: BrokerKey, events: list[Event]) -> asyncio.Future[None] | None:
        return None  # a send goes through the producer's coroutines: `publish`

    async def publish(self, broker: BrokerKey, events: list[Event]) -> None:
        """Returns once every event is acknowledged by all in-sync replicas of its partition. On failure some
        of them may be stored all the same: a retry by the sender may duplicate them (at least once)."""
        if not events:
            return
        producer = await self._producer_now()
        topic = topic_name(broker)
        try:
            async with asyncio.timeout(self.timeout):
                await self._ensure_topic(topic)
                sent = []
                for event in events:
                    key, value, headers = encode(event)
                    sent.append(await producer.send(topic, value=value, key=key, headers=headers))
                # Every outcome is collected, so that no failed delivery is left unobserved.
                outcomes = await asyncio.gather(*sent, return_exceptions=True)
        except (KafkaError, TimeoutError) as exc:
            self._discard_producer(producer)
            raise _failure(f"publishing {len(events)} event(s) to {topic}", exc) from exc
        failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failed is not None:
            self._discard_producer(producer)
            raise _failure(f"publishing {len(events)} event(s) to {topic}", failed) from failed

    async def subscribe(self, broker: BrokerKey, trigger: TriggerKey) -> KafkaSubscription:
        topic = topic_name(broker)
        try:
            async with asyncio.timeout(self.timeout):
                await self._ensure_topic(topic)
        except (KafkaError, TimeoutError) as exc:
            raise _failure(f"creating {topic}", exc) from exc
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=CLIENT_ID,
            group_id=group_id(trigger),
            enable_auto_commit=False,
            # Only a partition the group never committed for starts at its end; `_start` commits every start
            # at once, so this applies to a new Trigger only.
            auto_offset_reset="latest",
            # A Trigger stops fetching while its deliveries in flight are all taken (a slow or overloaded
            # subscriber holds them for minutes); leaving the group then would hand every one of them out
            # again. Liveness comes from the heartbeat, which runs on its own.
            max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
        )
        subscription = KafkaSubscription(consumer, topic, self.timeout, self._subscriptions.discard)
        consumer.subscribe([topic], listener=_Rebalance(subscription))
        self._subscriptions.add(subscription)
        try:
            await subscription._start()
        except BaseException as exc:  # cancelled too: the consumer must not stay in the group
            await subscription.close()
            if isinstance(exc, KafkaError | TimeoutError):
                raise _failure(f"joining {group_id(trigger)} on {topic}", exc) from exc
            raise
        return subscription

    async def forget(self, broker: BrokerKey, trigger: TriggerKey | None = None) -> None:
        """Delete a Trigger's consumer group (it must have no open subscription), or a Broker's topic: Kafka
        then drops every group's committed offsets of that topic as well."""
        try:
            async with asyncio.timeout(self.timeout):
                if trigger is not None:
                    await self._delete_group(group_id(trigger))
                else:
                    await self._delete_topic(topic_name(broker))
        except (KafkaError, TimeoutError) as exc:
            what = group_id(trigger) if trigger is not None else topic_name(broker)
            raise _failure(f"deleting {what}", exc) from exc

    # --- internals ------------------------------------------------------------------------------------------

    def _started(self, client: Any) -> Any:
        if client is None:
            raise BackendError("kafka: the backend is not started")
        return client

    async def _ensure_topic(self, topic: str) -> None:
        """Create the topic unless this backend knows it exists; one creation at a time."""
        if topic in self._topics:
            return
        admin = self._started(self._admin)
        async with self._topic_lock:
            if topic in self._topics:
                return
            response = await admin.create_topics([NewTopic(topic, self.partitions, self.replication_factor)])
            for _, code, *_ in response.topic_errors:
                if code not in (0, TOPIC_ALREADY_EXISTS):
                    raise for_code(code)(f"creating topic {topic}")
            self._topics.add(topic)

    async def _delete_topic(self, topic: str) -> None:
        admin = self._started(self._admin)
        self._topics.discard(topic)
        response = await admin.delete_topics([topic])
        for _, code, *_ in response.topic_error_codes:
            if code not in (0, UNKNOWN_TOPIC_OR_PARTITION):
                raise for_code(code)(f"deleting topic {topic}")

    async def _delete_group(self, group: str) -> None:
        client = self._started(self._client)
        coordinator = await client.coordinator_lookup(GROUP_COORDINATOR, group)
        response = await client.send(coordinator, DeleteGroupsRequest([group]))
        for _, code in response.results:
            if code == NON_EMPTY_GROUP:
                raise BackendError(
                    f"kafka: consumer group {group} still has members: close its subscriptions first"
                )
            if code not in (0, GROUP_ID_NOT_FOUND):
                raise for_code(code)(f"deleting consumer group {group}")
