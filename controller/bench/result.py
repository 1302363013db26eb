"""A finished benchmark run and its output folder: raw samples, JSON summary, PNG plots and a markdown report.

Scenarios fill a `RunResult`; `write_run` turns it into files. Nothing here measures: it only records.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from controller.bench import plot, report
from controller.bench.machine import Machine
from controller.bench.plot import Marker, PodPoint
from controller.bench.sample import Sample, write_samples
from controller.bench.summary import Check, GroupSummary, summarize

SAMPLES_FILE = "samples.jsonl.gz"
PODS_FILE = "pods.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"
LATENCY_PLOT = "latency-over-time.png"
DISTRIBUTION_PLOT = "latency-distribution.png"
PODS_PLOT = "pods-over-time.png"
BREAKDOWN_PLOT = "time-to-first-response.png"


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

    def group_summaries(self) -> dict[str, GroupSummary]:
        if self.group_of is None:
            return summarize(self.samples)
        return summarize(self.samples, self.group_of)

    def summary_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "title": self.title,
            "command": self.command,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
            "duration_s": round(self.duration, 3),
            "machine": self.machine.to_json(),
            "load_average_before": list(self.load_before),
            "load_average_after": list(self.load_after),
            "params": self.params,
            "generator": self.generator,
            "requests": len(self.samples),
            "errors": sum(g.errors for g in self.group_summaries().values()),
            "groups": {name: g.to_json() for name, g in self.group_summaries().items()},
            "checks": [c.to_json() for c in self.checks],
            "passed": all(c.passed for c in self.checks if c.gating),
            "notes": self.notes,
            **self.extra,
        }


def write_run(result: RunResult, out: Path) -> list[Path]:
    """Write every output file of a run into `out` (created if missing); returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / SAMPLES_FILE, out / SUMMARY_FILE]
    write_samples(out / SAMPLES_FILE, result.samples)
    if result.pods:
        with (out / PODS_FILE).open("w", encoding="utf-8") as f:
            for point in result.pods:
                f.write(json.dumps(asdict(point)) + "\n")
        files.append(out / PODS_FILE)
    (out / SUMMARY_FILE).write_text(json.dumps(result.summary_json(), indent=2) + "\n", encoding="utf-8")
    plots: list[tuple[str, str]] = []
    title = result.title
    key = result.group_of
    plot.latency_over_time(out / LATENCY_PLOT, result.samples, f"{title}: latency", result.markers, key)
    plots.append(
        (LATENCY_PLOT, "Latency of every request at its scheduled send time (p95 per second as lines)")
    )
    plot.latency_distribution(out / DISTRIBUTION_PLOT, result.samples, f"{title}: latency distribution", key)
    plots.append((DISTRIBUTION_PLOT, "Latency by percentile"))
    if result.pods or result.rates:
        plot.pods_over_time(out / PODS_PLOT, result.pods, f"{title}: pods", result.rates, result.markers)
        plots.append((PODS_PLOT, "Ready (solid) and desired (dashed) pods per revision"))
    if result.breakdown:
        plot.breakdown_bars(out / BREAKDOWN_PLOT, result.breakdown, f"{result.title}: time to first 200")
        plots.append((BREAKDOWN_PLOT, "Time to first 200 per service, split into its parts"))
    files += [out / name for name, _ in plots]
    (out / REPORT_FILE).write_text(report.render(result, plots), encoding="utf-8")
    files.append(out / REPORT_FILE)
    return files
