"""One Trigger's delivery loop: read its Broker's log through the Trigger's own subscription, skip what its
filter refuses, deliver the rest concurrently (bounded), send replies back into the Broker, and acknowledge
each record only once it was delivered, dead-lettered or given up on, so that a crash re-delivers and never
skips."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from eventing.backend import BackendError, Record, Subscription
from eventing.delivery import Deliverer, Gate, Outcome
from eventing.event import Event
from eventing.filter import compile_filters
from serving.contract.eventing import TriggerSpec

log = logging.getLogger(__name__)

IN_FLIGHT: Final = 100
"""Deliveries of one Trigger at once: enough to keep a scaled-out Service busy, bounded so that a stuck
subscriber holds at most this many connections."""
FETCH: Final = 200
"""Records read from the log per fetch."""
REPLY_ATTEMPTS: Final = 6
"""Tries to publish a reply (0.1 s, doubling: about 3 s in all) before it is given up and counted."""
FETCH_RETRY: Final = 0.1
FETCH_RETRY_MAX: Final = 5.0
"""Back-off between reads of a log that failed (Kafka unreachable): from 0.1 s, doubling, at most 5 s."""

Reply = Callable[[Event], Awaitable[None]]
"""Publishes a subscriber's reply into the Trigger's Broker."""


@dataclass(slots=True)
class TriggerCounts:
    """What `serving status` and the metrics show per Trigger."""

    matched: int = 0
    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    """Given up on with no dead-letter sink (or the sink failed too)."""
    replies: int = 0
    dropped_replies: int = 0
    """Replies the Broker's log could not keep after `REPLY_ATTEMPTS` tries."""
    in_flight: int = 0
    last_error: str = ""


class Dispatcher:
    def __init__(
        self,
        spec: TriggerSpec,
        subscription: Subscription,
        deliverer: Deliverer,
        reply: Reply,
        *,
        observe: Callable[[TriggerSpec, Outcome, float], None] | None = None,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        self.spec = spec
        self.counts = TriggerCounts()
        self._subscription = subscription
        self._deliverer = deliverer
        self._reply = reply
        self._observe = observe
        self._match = compile_filters(spec.filter_attributes, spec.filters)
        self._slots = asyncio.Semaphore(in_flight)
        self.gate = Gate(in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._resolved = asyncio.Event()
        if spec.subscriber is not None:
            self._resolved.set()

    def update(self, spec: TriggerSpec) -> None:
        """A changed Trigger of the same Broker: new filter, subscriber or delivery from the next event on."""
        self.spec = spec
        self._match = compile_filters(spec.filter_attributes, spec.filters)
        if spec.subscriber is None:
            self._resolved.clear()
        else:
            self._resolved.set()

    async def run(self) -> None:
        try:
            failures = 0
            while True:
                await self._resolved.wait()  # an unresolved subscriber: events wait in the log
                records: list[Record] | None
                try:
                    records = await self._subscription.fetch(FETCH)
                except BackendError as exc:  # the log is unreachable for now: nothing is lost, try again
                    failures += 1
                    delay = min(FETCH_RETRY * 2 ** min(failures - 1, 6), FETCH_RETRY_MAX)
                    self.counts.last_error = f"reading the broker's log: {exc}"
                    log.warning("trigger %s/%s: %s; reading again in %gs", *self.spec.key, exc, delay)
                    records = None
                if records is None:  # waited outside the except block (compiled: see setup.py)
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                for record in records:
                    if not self._match(record.event.attributes):
                        self._subscription.ack(record)
                        continue
                    await self._slots.acquire()
                    task = asyncio.create_task(self._deliver(record))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()  # not acknowledged: delivered again after a restart
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._subscription.close()

    async def _send_reply(self, reply: Event) -> None:
        """Publish a subscriber's reply into the Broker, retrying a log that is briefly unavailable; a reply
        that still cannot be kept is logged and counted, and its event is acknowledged all the same."""
        for attempt in range(REPLY_ATTEMPTS):
            try:
                await self._reply(reply)
            except BackendError as exc:
                self.counts.last_error = f"publishing reply {reply.id}: {exc}"
                if attempt + 1 == REPLY_ATTEMPTS:
                    log.error("trigger %s/%s: reply %s lost: %s", *self.spec.key, reply.id, exc)
                    self.counts.dropped_replies += 1
                    return
            else:
                self.counts.replies += 1
                return
            await asyncio.sleep(FETCH_RETRY * 2**attempt)  # outside the except block (compiled: see setup.py)

    async def _deliver(self, record: Record) -> None:
        counts = self.counts
        counts.matched += 1
        counts.in_flight += 1
        started = time.monotonic()
        try:
            if not self._resolved.is_set():
                await self._resolved.wait()
            spec = self.spec
            assert spec.subscriber is not None
            outcome = await self._deliverer.deliver(spec.subscriber, record.event, spec.delivery, self.gate)
            counts.retried += outcome.retries
            if outcome.delivered:
                counts.delivered += 1
                if outcome.reply is not None:
                    await self._send_reply(outcome.reply)
            else:
                last = outcome.last
                counts.last_error = (
                    f"status {last.status}"
                    if last is not None and last.status is not None
                    else (last.error if last else "")
                )
                if outcome.dead_lettered:
                    counts.dead_lettered += 1
                else:
                    counts.dropped += 1
            if self._observe is not None:
                self._observe(spec, outcome, time.monotonic() - started)
            self._subscription.ack(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # task boundary: a bug must not freeze the Trigger's position behind it
            log.exception(
                "delivering event %s of trigger %s/%s failed; dropped", record.event.id, *self.spec.key
            )
            counts.last_error = repr(exc)
            counts.dropped += 1
            self._subscription.ack(record)
        finally:
            counts.in_flight -= 1
            self._slots.release()
