from __future__ import annotations

import asyncio
import random

import pytest

from activator.balancer import PodTracker
from activator.throttler import UNLIMITED_CAPACITY, QueueFull, RevisionThrottler

PODS = [f"10.0.0.{i}:8012" for i in range(6)]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def waiters(throttler: RevisionThrottler, count: int) -> list[asyncio.Task[PodTracker]]:
    return [asyncio.create_task(throttler.acquire()) for _ in range(count)]


async def test_requests_wait_while_there_are_no_pods_and_go_when_one_appears() -> None:
    throttler = RevisionThrottler(container_concurrency=1, queue_depth=100)
    assert throttler.try_acquire() is None
    tasks = waiters(throttler, 3)
    await settle()
    assert throttler.waiting == 3
    assert not any(t.done() for t in tasks)

    throttler.update_backends([PODS[0]])
    await settle()
    done = [t for t in tasks if t.done()]
    assert len(done) == 1  # CC=1: one slot on one pod
    assert done[0].result().address == PODS[0]
    assert throttler.waiting == 2

    throttler.release(done[0].result())
    await settle()
    assert sum(t.done() for t in tasks) == 2
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_capacity_is_cc_times_pods_and_each_pod_gets_at_most_cc() -> None:
    throttler = RevisionThrottler(container_concurrency=2, queue_depth=100)
    throttler.update_backends(PODS[:3])
    assert throttler.capacity == 6
    held = [throttler.try_acquire() for _ in range(6)]
    assert all(h is not None for h in held)
    assert throttler.try_acquire() is None
    per_pod = {a: sum(1 for h in held if h is not None and h.address == a) for a in PODS[:3]}
    assert per_pod == {PODS[0]: 2, PODS[1]: 2, PODS[2]: 2}


async def test_full_queue_rejects_at_once() -> None:
    throttler = RevisionThrottler(container_concurrency=1, queue_depth=2)
    tasks = waiters(throttler, 2)
    await settle()
    with pytest.raises(QueueFull):
        await throttler.acquire()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert throttler.waiting == 0


async def test_cancelled_waiter_leaves_the_queue_and_never_gets_a_pod() -> None:
    throttler = RevisionThrottler(container_concurrency=1, queue_depth=10)
    first, second = waiters(throttler, 2)
    await settle()
    first.cancel()
    await settle()
    assert first.cancelled()
    assert throttler.waiting == 1
    throttler.update_backends([PODS[0]])
    await settle()
    assert second.done()
    assert throttler.tracker(PODS[0]) is second.result()
    assert second.result().in_flight == 1
    assert throttler.in_flight == 1


async def test_cc0_blocks_only_without_pods_then_admits_everything() -> None:
    throttler = RevisionThrottler(container_concurrency=0, queue_depth=10_000)
    tasks = waiters(throttler, 500)
    await settle()
    assert throttler.capacity == 0
    assert throttler.waiting == 500
    throttler.update_backends(PODS[:2])
    await settle()
    assert throttler.capacity == UNLIMITED_CAPACITY
    assert all(t.done() for t in tasks)
    loads = sorted(t.in_flight for t in (throttler.tracker(PODS[0]), throttler.tracker(PODS[1])) if t)
    assert sum(loads) == 500
    assert loads[1] - loads[0] <= 1  # two pods are always both compared
    throttler.update_backends([])
    assert throttler.capacity == 0
    assert throttler.try_acquire() is None


async def test_subsetting_uses_only_this_activators_pods() -> None:
    first = RevisionThrottler(container_concurrency=1, queue_depth=10, index=0, count=2)
    second = RevisionThrottler(container_concurrency=1, queue_depth=10, index=1, count=2)
    for throttler in (first, second):
        throttler.update_backends(reversed(PODS[:4]))
    assert first.assigned == PODS[:2]
    assert second.assigned == PODS[2:4]
    assert first.capacity == second.capacity == 2
    used = {t.address for t in (first.try_acquire(), first.try_acquire()) if t}
    assert used == set(PODS[:2])
    assert first.try_acquire() is None


async def test_cc0_ignores_subsetting() -> None:
    throttler = RevisionThrottler(container_concurrency=0, queue_depth=10, index=1, count=2)
    throttler.update_backends(PODS[:4])
    assert throttler.assigned == PODS[:4]


async def test_removed_pod_keeps_counting_its_requests_until_they_finish() -> None:
    throttler = RevisionThrottler(container_concurrency=1, queue_depth=10)
    throttler.update_backends(PODS[:2])
    a = throttler.try_acquire()
    b = throttler.try_acquire()
    assert a is not None
    assert b is not None
    throttler.update_backends([PODS[1]])  # a's pod is gone; its request is still running
    assert throttler.capacity == 1
    assert throttler.try_acquire() is None
    waiter = asyncio.create_task(throttler.acquire())
    await settle()
    throttler.release(a)  # the old pod's request ends: still no free slot on the remaining pod
    await settle()
    assert not waiter.done()
    throttler.release(b)
    await settle()
    assert waiter.done()
    assert waiter.result().address == PODS[1]


async def test_pod_limit_holds_under_random_churn() -> None:
    rng = random.Random(5)
    cc = 2
    throttler = RevisionThrottler(container_concurrency=cc, queue_depth=1000, rng=rng)
    held: list[PodTracker] = []
    pending = waiters(throttler, 200)
    for _ in range(300):
        action = rng.random()
        if action < 0.2:
            throttler.update_backends(rng.sample(PODS, rng.randint(0, len(PODS))))
        elif held and action < 0.7:
            throttler.release(held.pop(rng.randrange(len(held))))
        await settle()
        for task in [t for t in pending if t.done()]:
            pending.remove(task)
            held.append(task.result())
        per_pod: dict[int, int] = {}
        for tracker in held:
            per_pod[id(tracker)] = per_pod.get(id(tracker), 0) + 1
        assert all(n <= cc for n in per_pod.values())
        assert all(t.in_flight <= cc for t in held)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def test_a_long_queue_on_one_revision_does_not_delay_another() -> None:
    busy = RevisionThrottler(container_concurrency=1, queue_depth=10_000)
    quiet = RevisionThrottler(container_concurrency=1, queue_depth=10_000)
    quiet.update_backends([PODS[5]])
    queued = waiters(busy, 2000)
    await settle()
    assert busy.waiting == 2000
    tracker = quiet.try_acquire()
    assert tracker is not None
    assert tracker.address == PODS[5]
    for task in queued:
        task.cancel()
    await asyncio.gather(*queued, return_exceptions=True)
    assert busy.waiting == 0


async def test_changing_concurrency_resizes_capacity_and_pod_slots() -> None:
    throttler = RevisionThrottler(container_concurrency=1, queue_depth=10)
    throttler.update_backends(PODS[:2])
    throttler.update_concurrency(5)
    assert throttler.capacity == 10
    tracker = throttler.try_acquire()
    assert tracker is not None
    assert tracker.capacity == 5


def saturated(throttler: RevisionThrottler) -> bool:
    """Read afresh (a property read once and asserted is taken as fixed by the type checker)."""
    return throttler.saturated


async def test_a_revision_at_its_max_scale_keeps_a_short_queue_and_turns_the_rest_away_at_once() -> None:
    """Below max-scale the long queue rides out the scale-up; at max-scale no capacity is coming, so only
    `queue_per_slot` per slot may wait and the next request is refused without waiting."""
    throttler = RevisionThrottler(container_concurrency=2, queue_depth=100, queue_per_slot=1)
    throttler.update_max_scale(2)
    throttler.update_backends(PODS[:1])
    assert not saturated(throttler)
    assert all(throttler.try_acquire() is not None for _ in range(2))
    queued = waiters(throttler, 6)  # one pod of two: these may wait, a pod is coming
    await settle()
    assert throttler.waiting == 6

    throttler.update_backends(PODS[:2])  # max-scale reached: capacity 4, two of the six get its new slots
    await settle()
    assert saturated(throttler)
    assert throttler.waiting == 4, "those already waiting keep their place"
    with pytest.raises(QueueFull):
        await throttler.acquire()  # 4 slots x 1 per slot already wait
    for t in queued[-2:]:
        t.cancel()
    await settle()
    late = waiters(throttler, 2)  # room for two again
    await settle()
    assert throttler.waiting == 4
    assert not any(t.done() for t in late)

    throttler.update_backends(PODS[:1])  # a pod died: below max-scale, a replacement is coming
    assert not throttler.saturated
    more = waiters(throttler, 10)
    await settle()
    assert throttler.waiting == 14
    for t in [*queued, *late, *more]:
        t.cancel()
    await asyncio.gather(*queued, *late, *more, return_exceptions=True)


@pytest.mark.parametrize(("cc", "max_scale"), [(0, 2), (1, 0)], ids=["cc0-unlimited", "no-max-scale"])
async def test_revisions_without_a_bounded_capacity_keep_the_long_queue(cc: int, max_scale: int) -> None:
    throttler = RevisionThrottler(container_concurrency=cc, queue_depth=100, queue_per_slot=1)
    throttler.update_max_scale(max_scale)
    throttler.update_backends(PODS[:2])
    assert not throttler.saturated
    if cc:
        assert throttler.try_acquire() is not None
        assert throttler.try_acquire() is not None
        queued = waiters(throttler, 20)
        await settle()
        assert throttler.waiting == 20
        for t in queued:
            t.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
