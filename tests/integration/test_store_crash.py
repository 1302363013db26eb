"""The event store killed with SIGKILL: nothing whose `publish` returned is lost, and every event a Trigger
had not acked is delivered again after the restart (at least once)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from eventing.backend import Record
from eventing.store import EventStore, StoreSubscription
from tests.integration.store_child import BROKER, TRIGGER, event

ROOT = Path(__file__).resolve().parents[2]
COUNT = 10_000
KILL_AFTER = 3_000
"""Acknowledgements read from the child before it is killed: well into the run, well before its end."""


async def start_child(*args: str) -> asyncio.subprocess.Process:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.store_child",
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    assert await asyncio.wait_for(child.stdout.readline(), 20) == b"ready\n"
    return child


async def kill_after(child: asyncio.subprocess.Process, count: int) -> list[str]:
    """The ids the child printed, having killed it (SIGKILL) once it printed `count`; a line cut by the
    kill does not count."""
    assert child.stdout is not None
    printed: list[str] = []
    while len(printed) < count:
        line = await asyncio.wait_for(child.stdout.readline(), 20)
        assert line.endswith(b"\n"), f"the child ended after {len(printed)} ids"
        printed.append(line.decode().strip())
    child.send_signal(signal.SIGKILL)
    rest = (await child.stdout.read()).decode()
    printed += rest.split("\n")[:-1]
    assert await child.wait() == -signal.SIGKILL
    assert len(printed) < COUNT, "the child finished before it was killed"
    return printed


async def read_to_the_end(subscription: StoreSubscription) -> list[Record]:
    """Everything the log holds from the Trigger's position: until a fetch finds nothing for half a second
    (the log is on disk already, so a read takes milliseconds)."""
    records: list[Record] = []
    while True:
        try:
            records += await asyncio.wait_for(subscription.fetch(1000), 0.5)
        except TimeoutError:
            return records


async def test_sigkill_while_publishing_loses_no_acknowledged_event(tmp_path: Path) -> None:
    child = await start_child("publish", str(tmp_path), "--count", str(COUNT), "--publishers", "10")
    acknowledged = await kill_after(child, KILL_AFTER)

    store = EventStore(tmp_path)
    await store.start()
    present = [record.event.id for record in await read_to_the_end(await store.subscribe(BROKER, TRIGGER))]
    await store.close()

    assert len(acknowledged) == len(set(acknowledged))
    assert set(acknowledged) - set(present) == set()
    assert len(present) == len(set(present))
    print(
        f"\nkilled publishing: {len(acknowledged)} acknowledged, all present; "
        f"{len(present) - len(acknowledged)} present though never acknowledged"
    )


async def test_sigkill_while_acking_redelivers_every_unacked_event(tmp_path: Path) -> None:
    store = EventStore(tmp_path)
    await store.start()
    await (await store.subscribe(BROKER, TRIGGER)).close()
    for start in range(0, COUNT, 500):
        await store.publish(BROKER, [event(i, b"x" * 200) for i in range(start, start + 500)])
    await store.close()
    log = [event(i).id for i in range(COUNT)]

    child = await start_child("consume", str(tmp_path), "--in-flight", "50")
    acked = set(await kill_after(child, KILL_AFTER))

    store = EventStore(tmp_path)
    await store.start()
    subscription = await store.subscribe(BROKER, TRIGGER)
    again: list[str] = []
    while not again or again[-1] != log[-1]:
        again += [record.event.id for record in await asyncio.wait_for(subscription.fetch(1000), 5)]
    await store.close()

    assert set(log) - acked - set(again) == set()  # every un-acked event comes again
    assert again == log[-len(again) :]  # from a position, in order, each once
    assert len(again) < COUNT - KILL_AFTER // 2, "the acked prefix was not persisted while running"
    print(
        f"\nkilled acking: {len(acked)} acked, {COUNT - len(acked)} not; {len(again)} delivered again, "
        f"{len(acked & set(again))} of them duplicates of acked events"
    )


async def test_the_throughput_measurement_runs(tmp_path: Path) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.store_child",
        "bench",
        str(tmp_path),
        "--events",
        "200",
        "--publishers",
        "1",
        "10",
        "--trigger",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == 0
    lines = out.decode().splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["1", "10"]
    assert all(float(line.split()[2]) > 0 for line in lines[1:])
