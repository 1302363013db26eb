"""A short run of benchmarks/activator_chain.py's cold-start and held-memory measurements, so the script
keeps working (the CPU comparison needs wrk and minutes, and runs only from the script)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "activator_chain.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("activator_chain", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script loads
    spec.loader.exec_module(module)
    return module


async def test_cold_start_hand_over_is_measured() -> None:
    delays = await load().cold_starts(2)
    assert len(delays) == 2
    assert all(0 <= d < 5000 for d in delays)  # a measurement, not the 50 ms target


async def test_held_memory_is_measured() -> None:
    idle, held = await load().held_memory(100)
    assert 10 < idle < held
