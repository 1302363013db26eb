"""The processes the event store's crash tests kill, and a throughput measurement of its group commit.

Run from the repository root:
- `python -m tests.integration.store_child publish ROOT`: concurrent publishers; each event's id is printed
  once the `publish` that carried it returned.
- `python -m tests.integration.store_child consume ROOT`: a Trigger's deliveries, concurrent, acked out of
  order; each id is printed once acked.
- `python -m tests.integration.store_child bench ROOT`: events/s of 1 KiB events for 1, 10 and 100
  concurrent publishers (one event per `publish`), each on a fresh Broker under ROOT.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import sys
import time
from pathlib import Path

from eventing.backend import Record
from eventing.event import Event
from eventing.store import EventStore, StoreSubscription

BROKER = ("default", "crash")
TRIGGER = ("default", "survivor")


def event(i: int, data: bytes = b"") -> Event:
    attributes = {
        "id": f"e{i:05d}",
        "source": "/store/crash-test",
        "specversion": "1.0",
        "type": "dev.serving.test",
        "datacontenttype": "application/octet-stream",
    }
    return Event(attributes, data, {"traceparent": f"00-{i:032x}-{i:016x}-01"})


def say(*ids: str) -> None:
    sys.stdout.write("".join(f"{i}\n" for i in ids))
    sys.stdout.flush()


async def publish(root: Path, count: int, publishers: int) -> None:
    """Ids come from one counter; each publisher sends batches of 1 to 5, 0 to 2 ms apart, so that a test
    can kill the process mid-way, while batches are being written."""
    store = EventStore(root)
    await store.start()
    await (await store.subscribe(BROKER, TRIGGER)).close()  # the Trigger's position exists before any event
    say("ready")
    numbers = iter(range(count))
    rng = random.Random(1)

    async def publisher() -> None:
        while batch := [event(i, rng.randbytes(200)) for i in itertools.islice(numbers, rng.randint(1, 5))]:
            await store.publish(BROKER, batch)
            say(*(e.id for e in batch))
            await asyncio.sleep(rng.uniform(0, 0.002))

    await asyncio.gather(*(publisher() for _ in range(publishers)))
    await store.close()


async def consume(root: Path, in_flight: int) -> None:
    """Up to `in_flight` deliveries at once, each taking 0 to 20 ms, so acks come out of order."""
    store = EventStore(root)
    await store.start()
    subscription = await store.subscribe(BROKER, TRIGGER)
    say("ready")
    slots = asyncio.Semaphore(in_flight)
    rng = random.Random(2)
    deliveries: set[asyncio.Task[None]] = set()

    async def deliver(record: Record) -> None:
        try:
            await asyncio.sleep(rng.uniform(0, 0.02))
            subscription.ack(record)
            say(record.event.id)
        finally:
            slots.release()

    while True:
        for record in await subscription.fetch(100):
            await slots.acquire()
            task = asyncio.create_task(deliver(record))
            deliveries.add(task)
            task.add_done_callback(deliveries.discard)


async def consume_all(subscription: StoreSubscription, count: int) -> None:
    while count > 0:
        records = await subscription.fetch(1000)
        for record in records:
            subscription.ack(record)
        count -= len(records)


async def publish_each(
    store: EventStore, broker: tuple[str, str], events: list[Event], interval: float
) -> None:
    """One event per `publish`, each `interval` seconds after the previous one started (0: at once)."""
    due = time.monotonic()
    for e in events:
        await store.publish(broker, [e])
        due += interval
        if interval and (wait := due - time.monotonic()) > 0:
            await asyncio.sleep(wait)


async def bench(
    root: Path, events: int, size: int, publisher_counts: list[int], trigger: bool, rate: float
) -> None:
    pace = f"{rate:g} events/s in all" if rate else "as fast as they can"
    print(f"{events} events of {size} B data each, one per publish, {pace}; an fdatasync per group commit")
    for publishers in publisher_counts:
        store = EventStore(root)
        await store.start()
        broker = ("bench", f"p{publishers}-{time.monotonic_ns()}")
        subscription = await store.subscribe(broker, TRIGGER) if trigger else None
        prepared = [event(i, os.urandom(size)) for i in range(events)]
        per_publisher = [prepared[p::publishers] for p in range(publishers)]

        started, cpu = time.perf_counter(), os.times()
        await asyncio.gather(
            *(publish_each(store, broker, mine, publishers / rate if rate else 0) for mine in per_publisher),
            *([consume_all(subscription, events)] if subscription else []),
        )
        elapsed, used = time.perf_counter() - started, os.times()
        cpu_us = ((used.user - cpu.user) + (used.system - cpu.system)) / events * 1e6
        print(
            f"{publishers:4d} publishers: {events / elapsed:8.0f} events/s, "
            f"{events / store.batches:6.1f} events per fsync, {cpu_us:6.1f} us CPU per event "
            f"(user and system, whole process)" + (", one Trigger reading and acking" if trigger else "")
        )
        await store.forget(broker)
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["publish", "consume", "bench"])
    parser.add_argument("root", type=Path)
    parser.add_argument("--count", type=int, default=10_000, help="publish: events in all")
    parser.add_argument(
        "--publishers", type=int, nargs="+", help="concurrent publishers (publish: 10; bench: 1 10 100)"
    )
    parser.add_argument("--in-flight", type=int, default=50, help="consume: concurrent deliveries")
    parser.add_argument("--events", type=int, default=20_000, help="bench: events per publisher count")
    parser.add_argument("--size", type=int, default=1024, help="bench: data bytes per event")
    parser.add_argument("--trigger", action="store_true", help="bench: a Trigger reads and acks meanwhile")
    parser.add_argument("--rate", type=float, default=0, help="bench: paced to this many events/s in all")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as the components do")
    args = parser.parse_args()
    if args.mode == "publish":
        work = publish(args.root, args.count, (args.publishers or [10])[0])
    elif args.mode == "consume":
        work = consume(args.root, args.in_flight)
    else:
        counts = args.publishers or [1, 10, 100]
        work = bench(args.root, args.events, args.size, counts, args.trigger, args.rate)
    if args.uvloop:
        import uvloop

        uvloop.run(work)
    else:
        asyncio.run(work)


if __name__ == "__main__":
    main()
