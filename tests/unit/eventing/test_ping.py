"""The PingSource runtime on a fake wall clock: which events reach the sink, with which attributes, at which
times, across updates, removals, time zones and slow sinks."""

from __future__ import annotations

import asyncio
import heapq
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from eventing.event import Event
from eventing.ping import EVENT_TYPE, PingScheduler, build_event
from serving.events import Destination, PingSource

START = datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC)


async def settle() -> None:
    """Let every ready task run until the scheduler is asleep again."""
    for _ in range(20):
        await asyncio.sleep(0)


class FakeWallClock:
    """Wall time that moves only when the test says; sleepers wake in deadline order as it passes them."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._count = 0

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + timedelta(seconds=seconds), self._count, future))
        self._count += 1
        await future

    async def advance(self, seconds: float) -> None:
        """Move on `seconds`, stopping at each sleeper's deadline to wake it."""
        target = self._now + timedelta(seconds=seconds)
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            if future.done():  # its sleep was cancelled
                continue
            self._now = max(self._now, deadline)
            future.set_result(None)
            await settle()
        self._now = target
        await settle()

    async def step(self, seconds: float) -> None:
        """A wall-clock step (NTP): time jumps without passing through, then due sleepers wake."""
        self._now += timedelta(seconds=seconds)
        await self.advance(0)


class RecordingSink:
    """The injected `send`: records what arrives and when; sends of `slow` sources wait for `release`."""

    def __init__(self, clock: FakeWallClock) -> None:
        self.clock = clock
        self.received: list[tuple[str, datetime, Event]] = []
        self.started: list[str] = []
        self.slow: set[str] = set()
        self.release = asyncio.Event()
        self.failing: set[str] = set()

    async def send(self, source: PingSource, event: Event) -> None:
        self.started.append(source.name)
        if source.name in self.slow:
            await self.release.wait()
        if source.name in self.failing:
            raise ConnectionRefusedError("sink refused")
        self.received.append((source.name, self.clock.now(), event))

    def times(self, name: str) -> list[str]:
        """The `time` attribute of each event `name` sent, in arrival order."""
        return [event.attributes["time"] for sender, _, event in self.received if sender == name]


def ping(
    name: str,
    schedule: str,
    *,
    timezone: str | None = None,
    content_type: str | None = None,
    data: bytes = b"",
    ce_overrides: dict[str, str] | None = None,
) -> PingSource:
    return PingSource(
        kind="PingSource",
        name=name,
        namespace="demo",
        source=Path("pings.yaml"),
        schedule=schedule,
        timezone=timezone,
        content_type=content_type,
        data=data,
        sink=Destination(uri="http://sink.demo.svc"),
        ce_overrides=ce_overrides or {},
    )


@pytest.fixture
def clock() -> FakeWallClock:
    return FakeWallClock(START)


@pytest.fixture
def sink(clock: FakeWallClock) -> RecordingSink:
    return RecordingSink(clock)


@pytest.fixture
async def scheduler(clock: FakeWallClock, sink: RecordingSink) -> AsyncIterator[PingScheduler]:
    scheduler = PingScheduler(sink.send, now=clock.now, sleep=clock.sleep)
    task = asyncio.create_task(scheduler.run())
    yield scheduler
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_two_sources_fire_at_their_own_times(
    scheduler: PingScheduler, clock: FakeWallClock, sink: RecordingSink
) -> None:
    scheduler.update([ping("every-minute", "* * * * *"), ping("every-two", "*/2 * * * *")])
    await clock.advance(5 * 60)
    assert sink.times("every-minute") == [f"2024-05-01T12:0{m}:00Z" for m in range(1, 6)]
    assert sink.times("every-two") == ["2024-05-01T12:02:00Z", "2024-05-01T12:04:00Z"]
    # Each event left at its fire time, not later.
    assert all(event.attributes["time"] == rfc(at) for _, at, event in sink.received)


def rfc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def test_the_event_carries_knatives_pingsource_attributes(
    scheduler: PingScheduler, clock: FakeWallClock, sink: RecordingSink
) -> None:
    scheduler.update(
        [
            ping(
                "hello",
                "* * * * *",
                content_type="application/json",
                data=b'{"message": "Hello world!"}',
                ce_overrides={"team": "blue", "Region": "eu", "type": "hijack", "bad-name": "x"},
            )
        ]
    )
    await clock.advance(60)
    [(_, _, event)] = sink.received
    attributes = dict(event.attributes)
    assert uuid.UUID(attributes.pop("id")).version == 4
    assert attributes == {
        "specversion": "1.0",
        "type": EVENT_TYPE,
        "source": "/apis/v1/namespaces/demo/pingsources/hello",
        "time": "2024-05-01T12:01:00Z",
        "datacontenttype": "application/json",
        "team": "blue",
        "region": "eu",  # extension names are lower-cased; core attributes and invalid names left out
    }
    assert event.type == "dev.knative.sources.ping"
    assert event.data == b'{"message": "Hello world!"}'


def test_without_data_there_is_no_content_type_and_each_fire_gets_a_new_id() -> None:
    source = ping("bare", "* * * * *", content_type="text/plain")
    first = build_event(source, START, str(uuid.uuid4()))
    second = build_event(source, START, str(uuid.uuid4()))
    assert "datacontenttype" not in first.attributes
    assert first.data == b""
    assert first.id != second.id
    assert first.attributes["time"] == "2024-05-01T12:00:30Z"


async def test_update_replaces_a_schedule_and_keeps_unchanged_ones(
    scheduler: PingScheduler, clock: FakeWallClock, sink: RecordingSink
) -> None:
    scheduler.update([ping("rare", "*/10 * * * *"), ping("steady", "*/5 * * * *", data=b"v1")])
    await clock.advance(150)  # 12:03:00
    scheduler.update([ping("rare", "* * * * *"), ping("steady", "*/5 * * * *", data=b"v2")])
    await clock.advance(120)  # 12:05:00
    assert sink.times("rare") == ["2024-05-01T12:04:00Z", "2024-05-01T12:05:00Z"]
    # The unchanged schedule kept its time; the new data went with it.
    assert [event.data for name, _, event in sink.received if name == "steady"] == [b"v2"]
    assert sink.times("steady") == ["2024-05-01T12:05:00Z"]


async def test_a_removed_source_stops_firing(
    scheduler: PingScheduler, clock: FakeWallClock, sink: RecordingSink
) -> None:
    scheduler.update([ping("going", "* * * * *"), ping("staying", "* * * * *")])
    await clock.advance(60)  # 12:01:30, both fired once at 12:01
    scheduler.update([ping("staying", "* * * * *")])
    await clock.advance(180)
    assert sink.times("going") == ["2024-05-01T12:01:00Z"]
    assert len(sink.times("staying")) == 4
    assert set(scheduler.next_fire_times()) == {("PingSource", "demo", "staying")}


async def test_the_schedule_is_read_in_the_sources_time_zone(
    scheduler: PingScheduler, clock: FakeWallClock, sink: RecordingSink
) -> None:
    scheduler.update(
        [
            ping("tokyo-morning", "0 9 * * *", timezone="Asia/Tokyo"),
            ping("utc-morning", "0 9 * * *"),
            ping("paris-prefix", "CRON_TZ=Europe/Paris 0 9 * * *"),
        ]
    )
    await clock.advance(24 * 3600)
    assert sink.times("tokyo-morning") == ["2024-05-02T00:00:00Z"]
    assert sink.times("utc-morning") == ["2024-05-02T09:00:00Z"]
    assert sink.times("paris-prefix") == ["2024-05-02T07:00:00Z"]


async def test_a_slow_sink_delays_no_other_source_and_its_fires_are_bounded(
    scheduler: PingScheduler, clock: FakeWallClock, sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    sink.slow.add("stuck")
    scheduler.update([ping("stuck", "* * * * *"), ping("healthy", "* * * * *")])
    with caplog.at_level(logging.WARNING, logger="eventing.ping"):
        await clock.advance(5 * 60)
    assert sink.times("healthy") == [f"2024-05-01T12:0{m}:00Z" for m in range(1, 6)]
    assert [at for name, at, _ in sink.received if name == "healthy"] == [
        START.replace(minute=m, second=0) for m in range(1, 6)
    ]
    # Three sends of the stuck source wait at the sink; the two fires after them were dropped and counted.
    assert sink.started.count("stuck") == 3
    assert scheduler.dropped == {("PingSource", "demo", "stuck"): 2}
    assert "fire at 2024-05-01T12:04:00Z dropped: 3 sends still in flight" in caplog.text
    sink.release.set()
    await clock.advance(60)
    assert sink.times("stuck") == [f"2024-05-01T12:0{m}:00Z" for m in (1, 2, 3, 6)]


async def test_a_failing_send_is_logged_and_the_next_fire_still_happens(
    scheduler: PingScheduler, clock: FakeWallClock, sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    sink.failing.add("flaky")
    scheduler.update([ping("flaky", "* * * * *")])
    await clock.advance(60)
    assert "pings.yaml: document 1 (PingSource/flaky): sending event" in caplog.text
    assert "sink refused" in caplog.text
    sink.failing.clear()
    await clock.advance(60)
    assert sink.times("flaky") == ["2024-05-01T12:02:00Z"]


async def test_a_source_that_cannot_be_scheduled_is_reported_and_others_run(
    scheduler: PingScheduler, clock: FakeWallClock, sink: RecordingSink
) -> None:
    problems = scheduler.update([ping("broken", "61 * * * *"), ping("fine", "* * * * *")])
    assert problems == {("PingSource", "demo", "broken"): "minute field '61': 61 is out of range 0-59"}
    await clock.advance(60)
    assert [name for name, _, _ in sink.received] == ["fine"]


async def test_fires_missed_by_a_clock_step_are_sent_once(
    scheduler: PingScheduler, clock: FakeWallClock, sink: RecordingSink
) -> None:
    scheduler.update([ping("tick", "* * * * *")])
    await clock.advance(30)  # 12:01:00 fired
    await clock.step(10 * 60 + 15)  # the wall clock jumps to 12:11:15
    await clock.advance(45)
    assert sink.times("tick") == ["2024-05-01T12:01:00Z", "2024-05-01T12:02:00Z", "2024-05-01T12:12:00Z"]


async def test_a_source_added_while_the_scheduler_sleeps_fires_on_time(
    scheduler: PingScheduler, clock: FakeWallClock, sink: RecordingSink
) -> None:
    scheduler.update([ping("daily", "@daily")])
    await clock.advance(10)
    scheduler.update([ping("daily", "@daily"), ping("soon", "* * * * *")])
    await clock.advance(50)
    assert sink.times("soon") == ["2024-05-01T12:01:00Z"]


async def test_cancelling_run_cancels_sends_in_flight(clock: FakeWallClock, sink: RecordingSink) -> None:
    sink.slow.add("stuck")
    scheduler = PingScheduler(sink.send, now=clock.now, sleep=clock.sleep)
    scheduler.update([ping("stuck", "* * * * *")])
    task = asyncio.create_task(scheduler.run())
    await clock.advance(30)
    assert sink.started == ["stuck"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    leftover = [t for t in asyncio.all_tasks() if t.get_name().startswith("ping ")]
    assert leftover == []
    assert sink.received == []
