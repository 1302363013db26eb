"""The figures of a scale-from-zero wake: per Service, its time to first 200 split into parts, the checks
against the bars, and the report's tables (each Service's wake, and the same apps without the platform).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bench.load.sample import Sample
from bench.results.result import RunResult
from bench.results.summary import Check, Distribution, percentile
from bench.scenarios.floor import FloorRun
from bench.system.podwatch import PodLifecycle

PARTS: Final = ("until pod start", "pod start to ready", "activator after ready", "proxy and app")


@dataclass(frozen=True, slots=True, kw_only=True)
class Wake:
    """The figures of one woken Service, in ms from the wake instant."""

    group: int
    service: str
    time_to_first_200: float | None
    activator_wait: float | None
    pod_start: float | None
    readiness: float | None
    activator_after_ready: float | None
    """When the activator forwarded the request minus when the platform reported the pod ready: negative
    when the activator's own probe found the pod ready first."""
    errors: int

    def parts(self) -> dict[str, float]:
        """Time to first 200 split into `PARTS`, which add up to it (each clipped to what is left)."""
        total = self.time_to_first_200 or 0.0
        start = min(self.pod_start or 0.0, total)
        ready = min(self.readiness or 0.0, total - start)
        held = min(max((self.activator_wait or 0.0) - start - ready, 0.0), total - start - ready)
        return dict(zip(PARTS, (start, ready, held, total - start - ready - held), strict=True))


def wake_of(
    group: int, name: str, samples: list[Sample], life: PodLifecycle, revision: str, t0_unix: float
) -> Wake:
    """The wake of Service `name` from its samples and its revision's first pod (times from `t0_unix`).

    The parts come from the platform's watch stream (when the pod started and was first seen ready) and from
    the `Server-Timing: activator;dur=` header (how long the request waited in the activator).
    """
    ok = [s for s in samples if s.ok]
    first = min(samples, key=lambda s: s.scheduled)
    pod = life.first_pod(revision)
    if pod is not None and pod.started_at < t0_unix - 1.0:
        pod = None  # a pod from before the wake (never expected once the revision was at zero)
    pod_start = (pod.started_at - t0_unix) * 1000 if pod is not None else None
    readiness = (
        (pod.ready_at - pod.started_at) * 1000 if pod is not None and pod.ready_at is not None else None
    )
    after_ready = None
    if pod is not None and pod.ready_at is not None and first.activator_ms is not None:
        forwarded = t0_unix + first.scheduled + first.activator_ms / 1000
        after_ready = (forwarded - pod.ready_at) * 1000
    return Wake(
        group=group,
        service=name,
        time_to_first_200=min(((s.scheduled + s.latency) * 1000 for s in ok), default=None),
        activator_wait=first.activator_ms,
        pod_start=pod_start,
        readiness=readiness,
        activator_after_ready=after_ready,
        errors=sum(1 for s in samples if not s.ok),
    )


def judge(app: str, result: RunResult, wakes: list[Wake]) -> None:
    """Add the checks against the bars and the per-Service table to `result`."""
    after_ready = Distribution.of(
        max(w.activator_after_ready, 0.0) for w in wakes if w.activator_after_ready is not None
    )
    result.checks.append(
        Check(
            name=f"activator wait after the pod was ready, p95 ({app})",
            value=after_ready.p95 if after_ready else None,
            limit=50.0,
            unit="ms",
            knative="not measured by Knative",
        )
    )
    counts = sorted({w.group for w in wakes})
    for count in counts:
        times, answered = _group_times(wakes, count)
        if count == max(counts):
            result.checks.append(
                Check(
                    name=f"{count} at once: slowest time to first 200",
                    value=times[-1] if times and answered else None,
                    limit=5000.0,
                    unit="ms",
                    knative="p95 ≤ 2 s at 25, ≤ 25 s at 100",
                )
            )
        result.checks.append(
            Check(
                name=f"{count} at once: p95 time to first 200",
                value=percentile(times, 95) if times else None,
                limit=2000.0,
                unit="ms",
                knative="p95 ≤ 2 s at 25",
                gating=False,
            )
        )
    result.checks.append(
        Check(name="errors", value=sum(w.errors for w in wakes), limit=0, unit="", knative="0", digits=0)
    )
    result.sections.append(("Each Service's wake", _wakes_table(wakes)))


def _group_times(wakes: list[Wake], count: int) -> tuple[list[float], bool]:
    """The group's times to first 200, ascending, and whether every Service of the group got one."""
    group = [w for w in wakes if w.group == count]
    times = sorted(w.time_to_first_200 for w in group if w.time_to_first_200 is not None)
    return times, len(times) == len(group)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _wakes_table(wakes: list[Wake]) -> str:
    lines = [
        "Milliseconds from the wake instant. *Activator after ready*: how long the request stayed in the "
        "activator after the platform reported the pod ready (negative when the activator's own probe found "
        "the pod ready first; the bar counts those as 0).",
        "",
        "| woken at once | Service | first 200 | pod started | pod start to ready | activator wait "
        "| activator after ready | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w in wakes:
        lines.append(
            f"| {w.group} | {w.service} | {_ms(w.time_to_first_200)} | {_ms(w.pod_start)} "
            f"| {_ms(w.readiness)} | {_ms(w.activator_wait)} | {_ms(w.activator_after_ready)} | {w.errors} |"
        )
    return "\n".join(lines)


def floor_table(floors: list[FloorRun], wakes: list[Wake], copies: str = "the same commands") -> str:
    """The report's comparison of each group's wake with the same apps (`copies`) started without the
    platform."""
    lines = [
        f"Milliseconds to the first 200 when {copies} are started at the same instant with no "
        "platform (no queue-proxy, activator, autoscaler or controller; asked every 50 ms until they "
        "answer), measured in this run before the wakes above. *Added by the platform*: the slowest wake "
        "minus the slowest start without the platform.",
        "",
        "| at once | without the platform: p50 | slowest | woken through the platform: p50 | slowest "
        "| added by the platform |",
        "|---|---|---|---|---|---|",
    ]
    for run in floors:
        bare = run.answered
        woken, complete = _group_times(wakes, run.count)
        slowest = woken[-1] if woken and complete else None
        added = None if slowest is None or run.slowest is None else slowest - run.slowest
        lines.append(
            f"| {run.count} | {_ms(percentile(bare, 50) if bare else None)} | {_ms(run.slowest)} "
            f"| {_ms(percentile(woken, 50) if woken else None)} | {_ms(slowest)} | {_ms(added)} |"
        )
    return "\n".join(lines)
