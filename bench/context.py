"""The shared context of one benchmark run: its parameters, output folder, HTTP session and progress switch.
It imports no scenario, so the scenarios and the catalog that names them depend on it, never on each other."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.results.result import RunResult
from bench.system import machine


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """What a scenario run gets: its parameters (the preset with overrides applied), its output folder and
    shared plumbing."""

    scenario: str
    params: Mapping[str, Any]
    out: Path
    command: str
    """The command line as recorded in the report (`serving bench ...`: no interpreter or machine path)."""
    session: aiohttp.ClientSession
    progress: bool = True

    def num(self, key: str) -> float:
        return float(self.params[key])

    def integer(self, key: str) -> int:
        return int(self.params[key])

    def text(self, key: str) -> str:
        return str(self.params[key])

    def flag(self, key: str) -> bool:
        return bool(self.params[key])

    def ints(self, key: str) -> list[int]:
        return [int(v) for v in self.params[key]]

    def new_result(self, title: str) -> RunResult:
        """An empty result for this run, with the machine and its load average taken now."""
        return RunResult(
            scenario=self.scenario,
            title=title,
            command=self.command,
            params=dict(self.params),
            machine=machine.current(),
            load_before=machine.load_average(),
        )
