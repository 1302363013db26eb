"""A finished benchmark run as plain data: what the scenario measured, judged and wants shown.

Scenarios fill a `RunResult`; `bench.results.output` turns it into files. Nothing here measures or writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.load.sample import Sample
from bench.results.summary import Check, GroupSummary, summarize
from bench.system.machine import Machine
from bench.system.podwatch import PodPoint


@dataclass(frozen=True, slots=True, kw_only=True)
class Marker:
    """A moment worth a vertical line on time plots: a step change, a rollout edit."""

    t: float
    label: str


@dataclass(kw_only=True)
class RunResult:
    scenario: str
    title: str
    command: str
    params: dict[str, Any]
    machine: Machine
    load_before: tuple[float, float, float]
    started_at: float = field(default_factory=time.time)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    duration: float = 0.0
    """Wall time of the whole run (start-up of the system included), seconds."""
    samples: list[Sample] = field(default_factory=list)
    group_of: Callable[[Sample], str] | None = None
    """How samples are grouped in the summary and the plots; by target when None."""
    generator: dict[str, Any] = field(default_factory=dict)
    """Asked and achieved rates, send lag: whether the generator kept its schedule."""
    pods: list[PodPoint] = field(default_factory=list)
    rates: list[tuple[float, float]] = field(default_factory=list)
    """Offered requests per second over time, for the pods plot."""
    markers: list[Marker] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)
    """Extra markdown sections (heading, body) specific to the scenario."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Extra summary JSON specific to the scenario."""
    breakdown: dict[str, dict[str, float]] | None = None
    """Per row (service), named parts of a time in ms, drawn as stacked bars."""
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every gating figure met its bar."""
        return all(c.passed for c in self.checks if c.gating)

    def group_summaries(self) -> dict[str, GroupSummary]:
        if self.group_of is None:
            return summarize(self.samples)
        return summarize(self.samples, self.group_of)
