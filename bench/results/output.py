"""The output folder of a run: raw samples, pod observations, JSON summary, PNG plots and a markdown report,
all written from a `RunResult` after the run (plotting imports matplotlib only here, through `plot`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from bench.load.sample import write_samples
from bench.results import plot, report
from bench.results.result import RunResult

SAMPLES_FILE: Final = "samples.jsonl.gz"
PODS_FILE: Final = "pods.jsonl"
SUMMARY_FILE: Final = "summary.json"
REPORT_FILE: Final = "report.md"
LATENCY_PLOT: Final = "latency-over-time.png"
DISTRIBUTION_PLOT: Final = "latency-distribution.png"
PODS_PLOT: Final = "pods-over-time.png"
BREAKDOWN_PLOT: Final = "time-to-first-response.png"


def summary_json(result: RunResult) -> dict[str, Any]:
    """The run's `summary.json`: conditions, generator figures, per-group summaries and checks."""
    groups = result.group_summaries()
    return {
        "scenario": result.scenario,
        "title": result.title,
        "command": result.command,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(result.started_at)),
        "duration_s": round(result.duration, 3),
        "machine": result.machine.to_json(),
        "load_average_before": list(result.load_before),
        "load_average_after": list(result.load_after),
        "params": result.params,
        "generator": result.generator,
        "requests": len(result.samples),
        "errors": sum(g.errors for g in groups.values()),
        "groups": {name: g.to_json() for name, g in groups.items()},
        "checks": [c.to_json() for c in result.checks],
        "passed": result.passed,
        "notes": result.notes,
        **result.extra,
    }


def _plots(result: RunResult, out: Path) -> list[tuple[str, str]]:
    """Draw the run's plots into `out`; returns (file name, caption) of each."""
    title, key = result.title, result.group_of
    plot.latency_over_time(out / LATENCY_PLOT, result.samples, f"{title}: latency", result.markers, key)
    plots = [(LATENCY_PLOT, "Latency of every request at its scheduled send time (p95 per second as lines)")]
    plot.latency_distribution(out / DISTRIBUTION_PLOT, result.samples, f"{title}: latency distribution", key)
    plots.append((DISTRIBUTION_PLOT, "Latency by percentile"))
    if result.pods or result.rates:
        plot.pods_over_time(out / PODS_PLOT, result.pods, f"{title}: pods", result.rates, result.markers)
        plots.append((PODS_PLOT, "Ready (solid) and desired (dashed) pods per revision"))
    if result.breakdown:
        plot.breakdown_bars(out / BREAKDOWN_PLOT, result.breakdown, f"{title}: time to first 200")
        plots.append((BREAKDOWN_PLOT, "Time to first 200 per service, split into its parts"))
    return plots


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
    (out / SUMMARY_FILE).write_text(json.dumps(summary_json(result), indent=2) + "\n", encoding="utf-8")
    plots = _plots(result, out)
    files += [out / name for name, _ in plots]
    (out / REPORT_FILE).write_text(report.render(result, plots), encoding="utf-8")
    files.append(out / REPORT_FILE)
    return files
