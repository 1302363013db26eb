"""The PingSource runtime: keeps every PingSource's next fire time and, when it comes, builds the event
Knative's PingSource adapter (`mtping`) sends and hands it to an injected `send`, which delivers it to the
sink with retries; a slow sink delays only its own source.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from eventing.event import SPECVERSION, Event
from serving.cron import CronError, Schedule, parse_schedule
from serving.events import PingSource

logger = logging.getLogger(__name__)

EVENT_TYPE: Final = "dev.knative.sources.ping"
"""Knative's `sourcesv1.PingSourceEventType`."""
MAX_OUTSTANDING: Final = 3
"""Sends of one source that may be in flight at once; a fire beyond it is dropped and counted. Knative
retries a ping 5 times from 50 ms (well under a minute, the shortest cron period), so a healthy sink never
has more than one; three absorb a slow sink without letting a dead one pile up tasks."""
MAX_SLEEP: Final = 60.0
"""Seconds: the longest single sleep, so that a wall-clock step (NTP, a resumed VM) is noticed within a
minute rather than after a long sleep measured on the monotonic clock."""
CORE_ATTRIBUTES: Final = frozenset(
    {"id", "source", "type", "datacontenttype", "subject", "time", "specversion", "dataschema"}
)
"""CloudEvents 1.0 context attributes that `ceOverrides` cannot replace (the CloudEvents SDK refuses them)."""
_EXTENSION_NAME: Final = re.compile(r"[A-Za-z0-9]+")

Send = Callable[[PingSource, Event], Awaitable[None]]
"""Delivers one event to the source's sink (with the caller's retries); an exception is logged and the
event is lost, as Knative loses a ping whose retries are exhausted."""
SourceKey = tuple[str, str, str]


def source_uri(namespace: str, name: str) -> str:
    """Knative's `sourcesv1.PingSourceSource`: the `source` attribute of a PingSource's events."""
    return f"/apis/v1/namespaces/{namespace}/pingsources/{name}"


def override_extensions(overrides: Mapping[str, str]) -> dict[str, str]:
    """`spec.ceOverrides.extensions` as Knative's adapters apply them: names lower-cased, and names that are
    not ASCII letters and digits or that are core attributes left out (the SDK refuses them silently)."""
    return {
        name.lower(): value
        for name, value in overrides.items()
        if _EXTENSION_NAME.fullmatch(name) and name.lower() not in CORE_ATTRIBUTES
    }


def rfc3339(moment: datetime) -> str:
    """`moment` in UTC as CloudEvents `time` carries it: `2024-05-01T09:00:00Z`."""
    utc = moment.astimezone(UTC)
    return utc.isoformat(timespec="microseconds" if utc.microsecond else "seconds").replace("+00:00", "Z")


def build_event(source: PingSource, fire_time: datetime, event_id: str) -> Event:
    """The event Knative's `mtping` sends for one fire of `source` (its `makeEvent` plus the overrides the
    client applies).

    `time` is the scheduled fire time, where Knative stamps the moment of sending (up to half a second of
    random spread later): a subscriber sees which fire an event belongs to, retried or not.
    `datacontenttype` is set only with data, as Knative sets it only together with the data.
    """
    attributes = override_extensions(source.ce_overrides)
    attributes.update(
        specversion=SPECVERSION,
        id=event_id,
        source=source_uri(source.namespace, source.name),
        type=EVENT_TYPE,
        time=rfc3339(fire_time),
    )
    content_type = (source.content_type or "").strip()
    if source.data and content_type:
        attributes["datacontenttype"] = content_type
    return Event(attributes=attributes, data=source.data)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Entry:
    source: PingSource
    schedule: Schedule
    next_fire: datetime
    """In UTC, so that comparisons are between instants."""
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    """This source's sends not finished yet (kept across a reschedule, so the bound holds)."""


class PingScheduler:
    """Fires every PingSource it holds at its schedule's times.

    `update` replaces the whole set (the caller passes every PingSource it knows); `run` is the long-lived
    task. Each fire starts its own send task, so a slow sink never delays another source's fire; at most
    `max_outstanding` sends per source are in flight. Missed fire times (the clock stepped forward, the loop
    was blocked) are coalesced into one send, and the next time is computed from now, as robfig/cron does.
    """

    def __init__(
        self,
        send: Send,
        *,
        now: Callable[[], datetime] = _utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_outstanding: int = MAX_OUTSTANDING,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        if max_outstanding < 1:
            raise ValueError(f"max_outstanding must be at least 1, got {max_outstanding}")
        self._send = send
        self._now = now
        self._sleep = sleep
        self._max_outstanding = max_outstanding
        self._new_id = new_id
        self._entries: dict[SourceKey, _Entry] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._dropped: dict[SourceKey, int] = {}

    def update(self, sources: Iterable[PingSource]) -> dict[SourceKey, str]:
        """Make `sources` the set that fires; returns the problem of each source that cannot be scheduled.

        A source whose schedule and timezone are unchanged keeps its next fire time (other changes, such as
        data or overrides, apply from that fire on); a new or rescheduled one fires next after now; one no
        longer listed stops firing, though sends already started finish.
        """
        wanted = {source.key: source for source in sources}
        for key in self._entries.keys() - wanted.keys():
            del self._entries[key]
        problems: dict[SourceKey, str] = {}
        for key, source in wanted.items():
            entry = self._entries.get(key)
            if entry is not None and (entry.source.schedule, entry.source.timezone) == (
                source.schedule,
                source.timezone,
            ):
                entry.source = source
                continue
            try:
                schedule = parse_schedule(source.schedule, source.timezone)
                next_fire = schedule.next_after(self._now()).astimezone(UTC)
            except CronError as error:
                problems[key] = str(error)
                logger.error("%s: not scheduled: %s", source.where, error)
                self._entries.pop(key, None)
                continue
            self._entries[key] = _Entry(
                source, schedule, next_fire, in_flight=entry.in_flight if entry is not None else set()
            )
        self._changed.set()
        return problems

    def next_fire_times(self) -> dict[SourceKey, datetime]:
        """Each scheduled source's next fire time (UTC), for status and tests."""
        return {key: entry.next_fire for key, entry in self._entries.items()}

    @property
    def dropped(self) -> Mapping[SourceKey, int]:
        """Fires skipped per source because `max_outstanding` sends were still in flight."""
        return dict(self._dropped)

    async def run(self) -> None:
        """Fire sources until cancelled. Cancelling it cancels the sends still in flight and waits for them
        to unwind, so no task outlives it."""
        try:
            while True:
                self._changed.clear()
                now = self._now()
                for entry in list(self._entries.values()):
                    if entry.next_fire <= now:
                        self._fire(entry, now)
                upcoming = min((entry.next_fire for entry in self._entries.values()), default=None)
                if upcoming is None:
                    await self._changed.wait()
                else:
                    await self._wait(min((upcoming - now).total_seconds(), MAX_SLEEP))
        finally:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _fire(self, entry: _Entry, now: datetime) -> None:
        fire_time = entry.next_fire
        source = entry.source
        try:
            entry.next_fire = entry.schedule.next_after(now).astimezone(UTC)
        except CronError as error:  # no time within the search horizon: nothing more will ever fire
            logger.error("%s: stops firing: %s", source.where, error)
            del self._entries[source.key]
        if len(entry.in_flight) >= self._max_outstanding:
            self._dropped[source.key] = self._dropped.get(source.key, 0) + 1
            logger.warning(
                "%s: fire at %s dropped: %d sends still in flight",
                source.where,
                rfc3339(fire_time),
                len(entry.in_flight),
            )
            return
        event = build_event(source, fire_time, self._new_id())
        task = asyncio.create_task(
            self._deliver(source, event), name=f"ping {source.namespace}/{source.name}"
        )
        entry.in_flight.add(task)
        self._tasks.add(task)
        task.add_done_callback(entry.in_flight.discard)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, source: PingSource, event: Event) -> None:
        try:
            await self._send(source, event)
        except Exception:  # the send task's boundary: log, and the event is lost as in Knative
            logger.exception("%s: sending event %s failed", source.where, event.id)

    async def _wait(self, seconds: float) -> None:
        """Sleep `seconds`, or less if `update` changes the set meanwhile."""
        sleeper = asyncio.ensure_future(self._sleep(max(seconds, 0.0)))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait((sleeper, changed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            changed.cancel()
