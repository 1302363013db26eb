from __future__ import annotations

import asyncio

import pytest

from serving.breaker import Breaker, QueueFull


async def test_capacity_then_queue_then_queue_full() -> None:
    breaker = Breaker(capacity=2, queue_depth=3)
    await breaker.acquire()
    await breaker.acquire()
    waiters = [asyncio.create_task(breaker.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    assert breaker.in_flight == 2
    assert breaker.waiting == 3
    with pytest.raises(QueueFull):
        await breaker.acquire()
    breaker.release()
    await asyncio.sleep(0)
    assert waiters[0].done()
    assert not waiters[1].done()
    assert breaker.in_flight == 2
    assert breaker.waiting == 2
    for task in waiters[1:]:
        task.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_waiters_are_served_in_order() -> None:
    breaker = Breaker(capacity=1, queue_depth=10)
    await breaker.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        await breaker.acquire()
        order.append(i)
        breaker.release()

    tasks = [asyncio.create_task(wait(i)) for i in range(5)]
    await asyncio.sleep(0)
    breaker.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert breaker.in_flight == 0


async def test_cancelled_waiter_frees_its_place() -> None:
    breaker = Breaker(capacity=1, queue_depth=1)
    await breaker.acquire()
    first = asyncio.create_task(breaker.acquire())
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert breaker.waiting == 0
    second = asyncio.create_task(breaker.acquire())
    await asyncio.sleep(0)
    breaker.release()
    await second
    assert breaker.in_flight == 1


async def test_cancel_after_hand_over_passes_slot_on() -> None:
    breaker = Breaker(capacity=1, queue_depth=2)
    await breaker.acquire()
    first = asyncio.create_task(breaker.acquire())
    second = asyncio.create_task(breaker.acquire())
    await asyncio.sleep(0)
    breaker.release()  # hands the slot to `first` ...
    first.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    assert breaker.in_flight == 1
    assert breaker.waiting == 0


async def test_raising_capacity_admits_waiters() -> None:
    breaker = Breaker(capacity=0, queue_depth=5)
    tasks = [asyncio.create_task(breaker.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    assert breaker.waiting == 3
    breaker.set_capacity(2)
    await asyncio.sleep(0)
    assert sum(t.done() for t in tasks) == 2
    breaker.set_capacity(3)
    await asyncio.gather(*tasks)
    assert breaker.in_flight == 3


def test_try_acquire_never_waits() -> None:
    breaker = Breaker(capacity=1, queue_depth=0)
    assert breaker.try_acquire()
    assert not breaker.try_acquire()
    breaker.release()
    assert breaker.try_acquire()


def test_release_without_acquire_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        Breaker(capacity=1, queue_depth=0).release()
