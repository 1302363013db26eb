"""Where a Broker keeps its events: the storage seam between the ingress, the dispatchers and a backend.

A backend keeps one ordered log per Broker. The ingress `publish`es to it and answers `202` only once the
backend holds the event durably. Each Trigger reads the log through its own `Subscription` (its own position,
as a Kafka consumer group has its own offsets), delivers each record, and `ack`s it once it was delivered or
dead-lettered; a backend persists a Trigger's position only up to the first record not yet acked, so that a
crash re-delivers (at least once) and never skips.

Two backends implement it: `eventing.store` (the embedded default: segment files on local disk, fsynced) and
`eventing.kafka` (one Kafka topic per Broker, one consumer group per Trigger).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from eventing.event import Event

BrokerKey = tuple[str, str]
"""(namespace, name) of a Broker."""
TriggerKey = tuple[str, str]
"""(namespace, name) of a Trigger."""


class BackendError(Exception):
    """The backend cannot take or give events right now (disk full, Kafka unreachable): the ingress answers
    `503` and a dispatcher retries later; nothing that was acknowledged is lost."""


@dataclass(frozen=True, slots=True)
class Record:
    position: int
    """The record's place in its Broker's log (an offset), increasing within one partition of it (the embedded
    log has one; a Kafka topic several, and events with the same `partitionkey` share one); only the
    backend interprets it."""
    event: Event


class Subscription(Protocol):
    async def fetch(self, limit: int) -> list[Record]:
        """The next records after those already fetched, at most `limit`, in log order (per partition);
        waits until at least one exists (cancel to stop waiting)."""
        ...

    def ack(self, record: Record) -> None:
        """`record` is done with (delivered, or dead-lettered): the persisted position may pass it."""
        ...

    async def close(self) -> None:
        """Persist the position as far as acks allow and release what the subscription holds."""
        ...


class Backend(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None:
        """Flush and release everything; events published before are durable."""
        ...

    async def publish(self, broker: BrokerKey, events: list[Event]) -> None:
        """Append `events` to `broker`'s log; returns once they are durable (raises `BackendError` if not)."""
        ...

    def submit(self, broker: BrokerKey, events: list[Event]) -> asyncio.Future[None] | None:
        """`publish` without a coroutine where the backend can (a future done once the events are durable,
        whoever awaits it); None where it cannot right now, and `publish` is the way."""
        ...

    async def subscribe(self, broker: BrokerKey, trigger: TriggerKey) -> Subscription:
        """A Trigger's reader of `broker`'s log, from its persisted position (a new Trigger starts at the end
        of the log as it is now, as a new Knative Trigger gets only events that arrive after it)."""
        ...

    async def forget(self, broker: BrokerKey, trigger: TriggerKey | None = None) -> None:
        """Remove a deleted Trigger's position, or (with no trigger) a deleted Broker's log and positions."""
        ...
