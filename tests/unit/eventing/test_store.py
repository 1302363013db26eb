"""The embedded event store on real files: exact round trips, order, independent Triggers, positions that
survive a restart, torn tails, rollover and retention, write errors surfaced as `BackendError`, and the list
of what it holds."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventing.backend import Backend, BackendError, Record
from eventing.event import Event
from eventing.store import READ_BYTES, EventStore, StoreSubscription, decode, encode

BROKER = ("default", "orders")
T1 = ("default", "audit")
T2 = ("default", "billing")


def event(i: int, data: bytes = b"", **extra: str) -> Event:
    attributes = {"id": f"e{i:05d}", "source": "/orders", "specversion": "1.0", "type": "order.created"}
    return Event({**attributes, **extra}, data)


def ids(records: list[Record]) -> list[str]:
    return [record.event.id for record in records]


@asynccontextmanager
async def opened(root: Path, **settings: Any) -> AsyncIterator[EventStore]:
    store = EventStore(root, **settings)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def fetch_all(subscription: StoreSubscription, count: int) -> list[Record]:
    """Exactly `count` records (fails if they do not arrive within a second)."""
    records: list[Record] = []
    while len(records) < count:
        records += await asyncio.wait_for(subscription.fetch(count - len(records)), 1)
    assert len(records) == count
    return records


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def eventually(check: Callable[[], bool], message: Callable[[], str]) -> None:
    """Until `check()` holds; fails after two seconds (the store's threads and timers run meanwhile)."""
    deadline = time.monotonic() + 2
    while not check():
        assert time.monotonic() < deadline, message()
        await asyncio.sleep(0.005)


def segments(root: Path, broker: tuple[str, str] = BROKER) -> list[Path]:
    return sorted((root / broker[0] / broker[1]).glob("*.log"))


async def test_the_store_is_a_backend(tmp_path: Path) -> None:
    backend: Backend = EventStore(tmp_path)
    await backend.start()
    subscription = await backend.subscribe(BROKER, T1)
    await backend.publish(BROKER, [event(1)])
    assert ids(await subscription.fetch(10)) == ["e00001"]
    await backend.close()


@pytest.mark.parametrize(
    "original",
    [
        pytest.param(
            Event(
                {"id": "1", "source": "/s", "specversion": "1.0", "type": "t", "datacontenttype": "text/x"},
                b"hello",
                {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
            ),
            id="attributes-data-headers",
        ),
        pytest.param(Event({"id": "2"}, bytes(range(256)) * 4), id="every-byte-value"),
        pytest.param(Event({"id": "3"}), id="no-data-no-headers"),
        pytest.param(Event({"id": "4", "ext": "zé\u2603\U0001f600\0\n\ud800"}, b"\0"), id="any-string"),
        pytest.param(Event({"id": "5", "long": "x" * 70_000}, headers={"h": ""}), id="string-over-64k"),
        pytest.param(Event({"id": "6"}, os.urandom(READ_BYTES * 2)), id="larger-than-a-read"),
    ],
)
@pytest.mark.parametrize("source", ["memory", "file"])
async def test_an_event_comes_back_exactly(tmp_path: Path, original: Event, source: str) -> None:
    cache_bytes = 1 << 22 if source == "memory" else 0
    async with opened(tmp_path, cache_bytes=cache_bytes) as store:
        subscription = await store.subscribe(BROKER, T1)
        await store.publish(BROKER, [original])
        (record,) = await fetch_all(subscription, 1)
    assert record.event == original
    assert list(record.event.attributes.items()) == list(original.attributes.items())
    assert type(record.event.data) is bytes
    async with opened(tmp_path, cache_bytes=cache_bytes) as store:
        subscription = await store.subscribe(BROKER, T1)
        (again,) = await fetch_all(subscription, 1)
    assert again == record


strings = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)


@given(
    attributes=st.dictionaries(strings, strings, max_size=8),
    data=st.binary(max_size=300),
    headers=st.dictionaries(strings, strings, max_size=3),
)
def test_decode_inverts_encode(attributes: dict[str, str], data: bytes, headers: dict[str, str]) -> None:
    original = Event(attributes, data, headers)
    assert decode(encode(original)) == original


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x09" + bytes(8), id="unknown-format"),
        pytest.param(encode(event(1))[:-3], id="cut-short"),
        pytest.param(encode(event(1, b"abc"))[:9] + b"\xff" * 40, id="lengths-disagree"),
    ],
)
def test_decode_rejects_bytes_encode_did_not_make(payload: bytes) -> None:
    with pytest.raises(ValueError, match="not an encoded event"):
        decode(payload)


async def test_concurrent_publishers_each_keep_their_order_and_nothing_is_lost(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        subscription = await store.subscribe(BROKER, T1)

        async def publisher(p: int) -> None:
            for i in range(25):
                batch = [event(p * 1000 + i * 2), event(p * 1000 + i * 2 + 1)]
                await store.publish(BROKER, batch)

        await asyncio.gather(*(publisher(p) for p in range(20)))
        records = await fetch_all(subscription, 1000)
        assert store.published == 1000
        assert store.batches <= 100  # publishers waiting together shared an fsync (500 without)
    positions = [record.position for record in records]
    assert positions == sorted(set(positions))
    for p in range(20):
        mine = [i for i in ids(records) if int(i[1:]) // 1000 == p]
        assert mine == [f"e{p * 1000 + i:05d}" for i in range(50)]


async def test_a_trigger_behind_the_memory_cache_reads_the_files_then_catches_up(tmp_path: Path) -> None:
    async with opened(tmp_path, cache_bytes=3000, segment_bytes=2500) as store:
        subscription = await store.subscribe(BROKER, T1)
        published = [event(i, os.urandom(1000)) for i in range(10)]
        for e in published:
            await store.publish(BROKER, [e])
        records: list[Record] = []
        while len(records) < 10:
            records += await asyncio.wait_for(subscription.fetch(3), 1)
    assert [record.event for record in records] == published


async def test_triggers_keep_their_own_positions(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        audit = await store.subscribe(BROKER, T1)
        billing = await store.subscribe(BROKER, T2)
        await store.publish(BROKER, [event(i) for i in range(5)])
        for record in await fetch_all(audit, 5):
            audit.ack(record)
        for record in await fetch_all(billing, 2):
            billing.ack(record)
    async with opened(tmp_path) as store:
        audit = await store.subscribe(BROKER, T1)
        billing = await store.subscribe(BROKER, T2)
        await store.publish(BROKER, [event(99)])
        assert ids(await fetch_all(audit, 1)) == ["e00099"]
        assert ids(await fetch_all(billing, 4)) == ["e00002", "e00003", "e00004", "e00099"]


async def test_only_the_contiguous_acked_prefix_survives_a_restart(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        subscription = await store.subscribe(BROKER, T1)
        await store.publish(BROKER, [event(i) for i in range(10)])
        records = await fetch_all(subscription, 10)
        done = [records[i] for i in (0, 1, 2, 4, 5, 7, 9)]
        random.Random(7).shuffle(done)
        for record in done:
            subscription.ack(record)
    async with opened(tmp_path) as store:
        subscription = await store.subscribe(BROKER, T1)
        records = await fetch_all(subscription, 7)
        assert ids(records) == [f"e{i:05d}" for i in range(3, 10)]
        for record in reversed(records):
            subscription.ack(record)
    async with opened(tmp_path) as store:
        subscription = await store.subscribe(BROKER, T1)
        await store.publish(BROKER, [event(10)])
        assert ids(await fetch_all(subscription, 1)) == ["e00010"]


async def test_acks_are_persisted_while_running_so_a_crash_repeats_little(tmp_path: Path) -> None:
    async with opened(tmp_path, persist_interval=0.01) as running:
        subscription = await running.subscribe(BROKER, T1)
        await running.publish(BROKER, [event(i) for i in range(6)])
        for record in (await fetch_all(subscription, 6))[:4]:
            subscription.ack(record)
        position_file = tmp_path / "default" / "orders" / "triggers" / "default" / "audit.pos"
        await eventually(
            lambda: int(position_file.read_text()) == subscription.position,
            lambda: "the acked position was not written",
        )
        # A second store on the same files sees what a restart after a crash of `running` would.
        async with opened(tmp_path) as restarted:
            again = await restarted.subscribe(BROKER, T1)
            assert ids(await fetch_all(again, 2)) == ["e00004", "e00005"]
            await again.close()


async def test_a_new_trigger_starts_at_the_end_of_the_log(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await store.publish(BROKER, [event(1), event(2)])
        await store.subscribe(BROKER, T1)
    async with opened(tmp_path) as store:
        # The position was persisted at subscribe: a restart in between does not move it to the new end.
        await store.publish(BROKER, [event(3)])
        late = await store.subscribe(BROKER, T1)
        assert ids(await fetch_all(late, 1)) == ["e00003"]
        newest = await store.subscribe(BROKER, T2)
        await store.publish(BROKER, [event(4)])
        assert ids(await fetch_all(newest, 1)) == ["e00004"]


def damage_last_record(path: Path, how: str, last_start: int) -> None:
    size = path.stat().st_size
    with path.open("r+b") as f:
        if how == "garbage":
            f.seek(size)
            f.write(b"\x17\x00\x00\x00" + os.urandom(60))
        elif how == "zeros":
            f.seek(size)
            f.write(bytes(4096))
        elif how == "cut-payload":
            f.truncate(size - 100)
        elif how == "cut-header":
            f.truncate(last_start + 3)
        elif how == "flipped-bit":
            f.seek(size - 10)
            byte = f.read(1)[0]
            f.seek(size - 10)
            f.write(bytes([byte ^ 0x10]))


@pytest.mark.parametrize(
    ("how", "survivors"),
    [
        pytest.param("garbage", 5, id="garbage-appended"),
        pytest.param("zeros", 5, id="zeros-appended"),
        pytest.param("cut-payload", 4, id="cut-in-a-payload"),
        pytest.param("cut-header", 4, id="cut-in-a-header"),
        pytest.param("flipped-bit", 4, id="crc-mismatch"),
    ],
)
async def test_a_torn_tail_is_cut_and_what_precedes_it_survives(
    tmp_path: Path, how: str, survivors: int
) -> None:
    async with opened(tmp_path) as store:
        subscription = await store.subscribe(BROKER, T1)
        for i in range(5):
            await store.publish(BROKER, [event(i, os.urandom(300))])
        last_start = (await fetch_all(subscription, 5))[-1].position  # not acked: T1 stays at the start
    (segment,) = segments(tmp_path)
    intact = segment.stat().st_size
    damage_last_record(segment, how, last_start)
    async with opened(tmp_path) as store:
        await store.subscribe(BROKER, T2)  # opens the Broker's log, which repairs it
        assert segment.stat().st_size == (intact if survivors == 5 else last_start)
        await store.publish(BROKER, [event(5)])
    async with opened(tmp_path) as store:
        records = await fetch_all(await store.subscribe(BROKER, T1), survivors + 1)
    assert ids(records) == [f"e{i:05d}" for i in range(survivors)] + ["e00005"]


async def test_a_corrupt_record_in_a_sealed_segment_is_reported_not_skipped(tmp_path: Path) -> None:
    async with opened(tmp_path, segment_bytes=2000, cache_bytes=0) as store:
        await (await store.subscribe(BROKER, T1)).close()
        for i in range(8):
            await store.publish(BROKER, [event(i, b"x" * 500)])
        first = segments(tmp_path)[0]
        assert len(segments(tmp_path)) > 1
    with first.open("r+b") as f:  # the third record of the first segment
        f.seek(2 * (first.stat().st_size // 4) + 300)
        f.write(b"?")
    async with opened(tmp_path, segment_bytes=2000, cache_bytes=0) as store:
        subscription = await store.subscribe(BROKER, T1)
        assert ids(await fetch_all(subscription, 2)) == ["e00000", "e00001"]
        with pytest.raises(BackendError, match="corrupt record"):
            await subscription.fetch(10)


async def test_segments_roll_over_and_only_fully_consumed_ones_are_deleted(tmp_path: Path) -> None:
    settings: dict[str, Any] = {"segment_bytes": 4000, "persist_interval": 0.01}
    async with opened(tmp_path, **settings) as store:
        audit = await store.subscribe(BROKER, T1)
        billing = await store.subscribe(BROKER, T2)
        for i in range(20):
            await store.publish(BROKER, [event(i, b"x" * 1000)])
        records = await fetch_all(audit, 20)
        starts = {record.position for record in records}
        bases = [int(path.stem) for path in segments(tmp_path)]
        assert len(bases) == 5
        assert set(bases) <= starts  # a segment is named by the position of its first record
        for record in records:
            audit.ack(record)
        for record in await fetch_all(billing, 9):
            billing.ack(record)
        # Billing resumes at record 9: segments ending at or before it go, the one holding it stays.
        kept = [
            base for base, end in zip(bases, [*bases[1:], 1 << 62], strict=True) if end > records[9].position
        ]
        assert kept == bases[2:]
        await eventually(
            lambda: [int(path.stem) for path in segments(tmp_path)] == kept,
            lambda: f"segments now: {segments(tmp_path)}",
        )
    async with opened(tmp_path, **settings) as store:
        billing = await store.subscribe(BROKER, T2)
        assert ids(await fetch_all(billing, 11)) == [f"e{i:05d}" for i in range(9, 20)]


async def test_a_broker_without_triggers_keeps_only_its_active_segment(tmp_path: Path) -> None:
    async with opened(tmp_path, segment_bytes=2000) as store:
        for i in range(10):
            await store.publish(BROKER, [event(i, b"x" * 1000)])
        await eventually(lambda: len(segments(tmp_path)) == 1, lambda: f"segments: {segments(tmp_path)}")
        assert int(segments(tmp_path)[0].stem) > 0
        subscription = await store.subscribe(BROKER, T1)
        await store.publish(BROKER, [event(10)])
        assert ids(await fetch_all(subscription, 1)) == ["e00010"]


async def test_forgetting_a_trigger_ends_it_and_releases_what_it_held(tmp_path: Path) -> None:
    async with opened(tmp_path, segment_bytes=2000) as store:
        slow = await store.subscribe(BROKER, T1)
        for i in range(6):
            await store.publish(BROKER, [event(i, b"x" * 1000)])
        await fetch_all(slow, 6)
        assert len(segments(tmp_path)) == 3  # T1 acked nothing: everything is kept for it
        waiting = asyncio.create_task(slow.fetch(10))
        await settle()
        await store.forget(BROKER, T1)
        with pytest.raises(BackendError, match="trigger deleted"):
            await waiting
        assert not (tmp_path / "default" / "orders" / "triggers" / "default" / "audit.pos").exists()
        assert len(segments(tmp_path)) == 1
        again = await store.subscribe(BROKER, T1)
        await store.publish(BROKER, [event(6)])
        assert ids(await fetch_all(again, 1)) == ["e00006"]


async def test_forgetting_a_broker_removes_its_folder_and_ends_its_subscriptions(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        subscription = await store.subscribe(BROKER, T1)
        await store.publish(BROKER, [event(1)])
        await fetch_all(subscription, 1)
        waiting = asyncio.create_task(subscription.fetch(10))
        await settle()
        await store.forget(BROKER)
        with pytest.raises(BackendError, match="broker deleted"):
            await waiting
        assert not (tmp_path / "default" / "orders").exists()
        # A Broker made again with the same name starts empty.
        await store.publish(BROKER, [event(2)])
        fresh = await store.subscribe(BROKER, T2)
        await store.publish(BROKER, [event(3)])
        assert ids(await fetch_all(fresh, 1)) == ["e00003"]
        assert [path.name for path in segments(tmp_path)] == [f"{0:020d}.log"]


def block_with_full_device(path: Path) -> None:
    path.symlink_to("/dev/full")


def block_with_directory(path: Path) -> None:
    path.mkdir()


@pytest.mark.parametrize(
    ("block", "message"),
    [
        pytest.param(block_with_full_device, "No space left on device", id="disk-full"),
        pytest.param(block_with_directory, "Is a directory", id="segment-path-is-a-directory"),
    ],
)
async def test_a_failed_write_raises_backend_error_and_the_store_carries_on(
    tmp_path: Path, block: Any, message: str
) -> None:
    """The failure is real, caused at the next rollover (root ignores file permissions): the next segment's
    path is taken by a link to /dev/full, whose writes fail with ENOSPC, or by a directory."""
    async with opened(tmp_path, segment_bytes=2000) as store:
        subscription = await store.subscribe(BROKER, T1)
        await store.publish(BROKER, [event(0, b"x" * 1000)])
        await store.publish(BROKER, [event(1, b"x" * 1000)])
        (active,) = segments(tmp_path)
        following = active.with_name(f"{int(active.stem) + active.stat().st_size:020d}.log")
        block(following)
        with pytest.raises(BackendError, match=message):
            await store.publish(BROKER, [event(2), event(3)])
        with pytest.raises(BackendError, match=message):
            await store.publish(BROKER, [event(4)])
        if following.is_symlink():
            following.unlink()
        else:
            following.rmdir()
        await store.publish(BROKER, [event(5)])
        assert ids(await fetch_all(subscription, 3)) == ["e00000", "e00001", "e00005"]
    async with opened(tmp_path, segment_bytes=2000) as store:
        await store.publish(BROKER, [event(6)])
        records = await fetch_all(await store.subscribe(BROKER, T1), 4)
        assert ids(records) == ["e00000", "e00001", "e00005", "e00006"]


async def test_fetch_waits_for_the_next_publish(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        subscription = await store.subscribe(BROKER, T1)
        waiting = asyncio.create_task(subscription.fetch(10))
        await settle()
        assert not waiting.done()
        await store.publish(BROKER, [event(1)])
        assert ids(await asyncio.wait_for(waiting, 1)) == ["e00001"]
        cancelled = asyncio.create_task(subscription.fetch(10))
        await settle()
        cancelled.cancel()
        await store.publish(BROKER, [event(2)])
        assert ids(await fetch_all(subscription, 1)) == ["e00002"]


async def test_a_trigger_has_one_open_subscription_at_a_time(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        first = await store.subscribe(BROKER, T1)
        with pytest.raises(ValueError, match="already has an open subscription"):
            await store.subscribe(BROKER, T1)
        await first.close()
        with pytest.raises(BackendError, match="subscription closed"):
            await first.fetch(1)
        await store.subscribe(BROKER, T1)


@pytest.mark.parametrize("name", ["", "..", "a/b", "a\0b"])
async def test_names_that_are_not_a_path_part_are_refused(tmp_path: Path, name: str) -> None:
    async with opened(tmp_path) as store:
        with pytest.raises(ValueError, match="not a usable namespace and name"):
            await store.publish(("default", name), [event(1)])
        with pytest.raises(ValueError, match="not a usable namespace and name"):
            await store.subscribe(BROKER, (name, "t"))


async def test_a_broker_whose_folder_cannot_be_made_is_a_backend_error(tmp_path: Path) -> None:
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "orders").write_text("not a folder")
    async with opened(tmp_path) as store:
        with pytest.raises(BackendError, match="cannot open its log"):
            await store.publish(BROKER, [event(1)])
        (tmp_path / "default" / "orders").unlink()
        subscription = await store.subscribe(BROKER, T1)
        await store.publish(BROKER, [event(2)])
        assert ids(await fetch_all(subscription, 1)) == ["e00002"]


async def test_the_store_lists_the_brokers_and_triggers_it_holds_without_opening_their_logs(
    tmp_path: Path,
) -> None:
    archive = ("default", "archive")
    audit = tmp_path / "default" / "orders" / "triggers" / "default" / "audit.pos"
    async with opened(tmp_path) as store:
        assert await store.held() == {}
        await store.subscribe(BROKER, T1)
        await store.subscribe(BROKER, T2)
        await store.publish(archive, [event(1)])
    unfinished = audit.with_name("audit.pos.tmp")  # a position write a crash cut short
    unfinished.write_text("7\n")
    (tmp_path / "default" / "notes").mkdir()  # neither a segment nor a `triggers` folder: not a log
    (tmp_path / "stray.log").write_text("")
    async with opened(tmp_path) as store:
        assert await store.held() == {BROKER: frozenset({T1, T2}), archive: frozenset()}
        assert unfinished.exists()  # opening the log would have removed it
        third = ("other", "payments")
        await store.subscribe(third, T1)
        await store.forget(BROKER, T2)
        assert await store.held() == {BROKER: frozenset({T1}), archive: frozenset(), third: frozenset({T1})}
        await store.forget(archive)
        assert archive not in await store.held()
    with pytest.raises(BackendError, match="not running"):
        await store.held()
