"""One load phase: a schedule of shots run by the load generator under a progress line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain
from typing import Any

from bench.load.generator import LoadGenerator, RunStats
from bench.load.progress import Progress, Snapshot
from bench.load.sample import Sample
from bench.load.schedule import Shot


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseResult:
    samples: list[Sample]
    stats: RunStats


async def run_phase(
    label: str,
    shots: Iterable[Shot],
    *,
    seconds: float,
    t0: float | None = None,
    request_timeout: float = 30.0,
    max_outstanding: int = 10_000,
    progress: bool = True,
) -> PhaseResult:
    """Run `shots` (offsets relative to `t0`); `seconds` is the expected length, for the progress bar.

    Scenarios chain phases and run watchers beside them on the same time base (`t0`, a `time.monotonic()`
    value), so samples, pod counts and markers line up on one time axis.
    """
    errors = 0

    def count(sample: Sample) -> None:
        nonlocal errors
        if not sample.ok:
            errors += 1

    gen = LoadGenerator(timeout=request_timeout, max_outstanding=max_outstanding, on_sample=count)

    def state() -> Snapshot:
        return Snapshot(
            sent=gen.stats.sent, done=gen.stats.completed, errors=errors, outstanding=gen.outstanding
        )

    schedule = iter(shots)
    first = next(schedule, None)
    if first is not None:
        schedule = chain([first], schedule)
    begins = None if t0 is None or first is None else t0 + first.at
    async with Progress(label, seconds, state, enabled=progress, start=begins):
        samples = await gen.run(schedule, t0=t0)
    return PhaseResult(samples=samples, stats=gen.stats)


def generator_json(stats: list[RunStats], asked_rate: float | None) -> dict[str, Any]:
    """The generator's own figures over one or more phases: planned, sent, rates, worst send delay."""
    sent = sum(s.sent for s in stats)
    span = sum(max(s.last_at - s.first_at, 0.0) for s in stats)
    return {
        "planned": sum(s.planned for s in stats),
        "sent": sent,
        "asked_rate": asked_rate,
        "achieved_rate": round((sent - len(stats)) / span, 2) if span > 0 else None,
        "max_send_lag_ms": round(max((s.max_send_lag for s in stats), default=0.0) * 1000, 3),
        "connections_opened": sum(s.connections_opened for s in stats),
        "resent_on_closed_keep_alive": sum(s.resent for s in stats),
    }
