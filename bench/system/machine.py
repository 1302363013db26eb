"""Describes the machine a benchmark ran on and how busy it was, so results are read with their conditions."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Machine:
    cpus: int
    cpu_model: str
    memory_gib: float
    python: str
    system: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"{self.cpus} CPUs ({self.cpu_model}), {self.memory_gib:.1f} GiB memory, "
            f"Python {self.python}, {self.system}"
        )


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def current() -> Machine:
    model = "unknown"
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
            break
    mem_kib = 0
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
            break
    return Machine(
        cpus=os.cpu_count() or 1,
        cpu_model=model,
        memory_gib=mem_kib / 1024 / 1024,
        python=platform.python_version(),
        system=f"{platform.system()} {platform.release()}",
    )


def load_average() -> tuple[float, float, float]:
    """1, 5 and 15 minute load averages: above the CPU count means a contended machine."""
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)
