"""The markdown report of a run: each figure beside our target and Knative's bar, the load conditions and
the plots."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Final

from bench.results.result import RunResult
from bench.results.summary import Check, GroupSummary


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def checks_table(checks: Sequence[Check]) -> str:
    lines = [
        "| figure | measured | our target | Knative's bar | result |",
        "|---|---|---|---|---|",
    ]
    for c in checks:
        if c.gating:
            verdict = "**pass**" if c.passed else "**FAIL**"
        else:
            verdict = "within (info)" if c.passed else "over (info)"
        measured = f"{_num(c.value, c.digits)} {c.unit}".rstrip()
        limit = f"≤ {_num(c.limit, c.digits)} {c.unit}".rstrip()
        lines.append(f"| {c.name} | {measured} | {limit} | {c.knative} | {verdict} |")
    return "\n".join(lines)


def groups_table(groups: dict[str, GroupSummary], label: str = "target") -> str:
    lines = [
        f"| {label} | requests | ok | errors | rate (rps) "
        "| p50 ms | p95 ms | p99 ms | max ms | activator waits |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, g in groups.items():
        lat = g.latency_ms
        kinds = ", ".join(f"{k}: {v}" for k, v in g.error_kinds.items())
        errors = f"{g.errors} ({kinds})" if g.errors else "0"
        waits = f"{g.activator_waits}"
        if g.activator_ms is not None:
            waits += f" (p95 {g.activator_ms.p95:,.1f} ms)"
        lines.append(
            f"| {name} | {g.requests} | {g.ok} | {errors} | {g.achieved_rate:,.1f} | "
            f"{_num(lat.p50 if lat else None)} | {_num(lat.p95 if lat else None)} | "
            f"{_num(lat.p99 if lat else None)} | {_num(lat.max if lat else None)} | {waits} |"
        )
    return "\n".join(lines)


_BUSY: Final = 1.0
"""1-minute load average before a run above which other processes were competing for the CPUs."""


def load_line(before: float, after: float, cpus: int) -> str:
    """The load conditions of a run; the load at its start is other processes', at its end its own too."""
    verdict = (
        "other processes were competing for the CPUs, so the figures include their contention"
        if before > _BUSY
        else "the machine was otherwise nearly idle when it started"
    )
    return (
        f"- Load average (1 min) at the start: {before:.2f}, at the end (the run's own load included): "
        f"{after:.2f}, on {cpus} CPUs: {verdict}."
    )


def _conditions(result: RunResult) -> str:
    """How busy the machine was (load average before and after against its CPU count) and whether the
    generator kept its schedule: a figure measured on a contended machine is not the system's own."""
    gen = result.generator
    lag = gen.get("max_send_lag_ms")
    lines = [
        f"- Machine: {result.machine.describe()}.",
        load_line(result.load_before[0], result.load_after[0], result.machine.cpus),
        "- The load generator, the components and the apps all ran on this one machine.",
    ]
    if lag is not None:
        asked, achieved = gen.get("asked_rate"), gen.get("achieved_rate")
        rates = f"asked {asked:,.1f} rps, achieved {achieved:,.1f} rps; " if asked and achieved else ""
        lines.append(
            f"- Generator: {gen.get('sent', 0)} requests sent of {gen.get('planned', 0)} planned; {rates}"
            f"worst send delay behind schedule {lag:,.1f} ms (latencies count from the scheduled time)."
        )
    return "\n".join(lines)


def render(result: RunResult, plots: Sequence[tuple[str, str]]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(result.started_at))
    passed = result.passed
    parts = [
        f"# {result.title}",
        "",
        f"Run {started}, {result.duration:,.0f} s wall time. Command:",
        "",
        f"```sh\n{result.command}\n```",
        "",
        "## Results against the bars",
        "",
        checks_table(result.checks) if result.checks else "No pass/fail figures for this scenario.",
        "",
        f"Overall: **{'pass' if passed else 'FAIL'}**.",
        "",
        "## Requests",
        "",
        groups_table(result.group_summaries()),
        "",
    ]
    for heading, body in result.sections:
        parts += [f"## {heading}", "", body.rstrip(), ""]
    parts += ["## Conditions", "", _conditions(result), ""]
    if result.notes:
        parts += ["## Notes", "", *[f"- {n}" for n in result.notes], ""]
    parts += ["## Parameters", "", "```json", json.dumps(result.params, indent=2), "```", ""]
    if plots:
        parts += ["## Plots", ""]
        for name, caption in plots:
            parts += [f"{caption}:", "", f"![{caption}]({name})", ""]
    return "\n".join(parts)
