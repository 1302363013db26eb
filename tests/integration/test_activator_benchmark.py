"""A short run of benchmarks/activator_chain.py's cold-start and held-memory measurements, so the script
keeps working (the CPU comparison needs wrk and minutes, and runs only from the script)."""

from __future__ import annotations

from types import ModuleType

from tests.integration.scripts import load_benchmark


def load() -> ModuleType:
    return load_benchmark("activator_chain")


async def test_cold_start_hand_over_is_measured() -> None:
    delays = await load().cold_starts(2)
    assert len(delays) == 2
    assert all(0 <= d < 5000 for d in delays)  # a measurement, not the 50 ms target


async def test_held_memory_is_measured() -> None:
    idle, held = await load().held_memory(100)
    assert 10 < idle < held
