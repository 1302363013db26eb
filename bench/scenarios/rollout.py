"""rollout-probe: a constant rate while the Service's template changes. The YAML file `serving up` watches is
rewritten mid-run with a new template (a new environment value), which creates a new revision and moves
traffic to it once it is ready. Errors and latency before, during and after the rollout.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from bench.context import Context
from bench.load.phase import generator_json, run_phase
from bench.load.sample import Sample
from bench.load.schedule import Target, constant_rate
from bench.results.result import Marker, RunResult
from bench.results.summary import Check, summarize
from bench.system import service
from bench.system.podwatch import StatusPoller, running
from bench.system.stack import LocalSystem, all_ready

SERVICE: Final = "rollout-probe"
BEFORE: Final = "before the edit"
DURING: Final = "during the rollout"
AFTER: Final = "after the rollout"
_ROLLOUT_LIMIT: Final = 30.0
"""Seconds within which the new revision must answer: the file is polled every second and a pod starts in a
few, so missing this means the rollout did not happen."""


def document(ctx: Context, version: str) -> dict[str, Any]:
    return service.document(
        SERVICE,
        service.benchapp(sleep_ms=ctx.num("sleep_ms"), version=version),
        annotations={service.MIN_SCALE: str(ctx.integer("min_scale"))},
        container_concurrency=ctx.integer("container_concurrency"),
    )


def phase_of(sample: Sample, edit_at: float, rolled_at: float | None) -> str:
    """Which part of the run a request belongs to, by its scheduled time."""
    if sample.scheduled < edit_at:
        return BEFORE
    if rolled_at is None or sample.scheduled <= rolled_at:
        return DURING
    return AFTER


async def run(ctx: Context) -> RunResult:
    rate, duration = ctx.num("rate"), ctx.num("duration")
    edit_at = duration * ctx.num("edit_at")
    result = ctx.new_result("rollout-probe")
    path = service.write(ctx.out / "services.yaml", [document(ctx, "v1")], "rollout-probe: version 1.")
    system = LocalSystem([path], ctx.out, ctx.session)

    async def edit() -> None:
        await asyncio.sleep(max(t0 + edit_at - time.monotonic(), 0.0))
        service.write(path, [document(ctx, "v2")], "rollout-probe: version 2 (edited during the run).")

    try:
        await system.start()
        await system.wait_for(f"{SERVICE} ready", lambda s: all_ready(s, [SERVICE], ctx.integer("min_scale")))
        target = Target(name=SERVICE, port=system.ingress_port, host_header=service.host(SERVICE))
        t0 = time.monotonic() + 0.2
        poller = StatusPoller(system.control_url, ctx.session, t0, interval=0.5)
        editor = asyncio.create_task(edit())
        try:
            async with running(poller):
                phase = await run_phase(
                    "rollout-probe",
                    constant_rate([target], rate, duration),
                    seconds=duration,
                    t0=t0,
                    request_timeout=ctx.num("request_timeout"),
                    progress=ctx.progress,
                )
                await poller.poll_once()
        finally:
            editor.cancel()
            await asyncio.gather(editor, return_exceptions=True)
    finally:
        await system.stop()
    result.samples = phase.samples
    result.pods = poller.points
    result.generator = generator_json([phase.stats], rate)
    _judge(result, edit_at)
    return result


def _judge(result: RunResult, edit_at: float) -> None:
    samples = sorted(result.samples, key=lambda s: s.scheduled)
    first_rev = next((s.revision for s in samples if s.revision), None)
    newer = [s.scheduled for s in samples if s.revision and s.revision != first_rev]
    older_after_edit = [s.scheduled for s in samples if s.revision == first_rev and s.scheduled >= edit_at]
    first_new = min(newer, default=None)
    last_old = max(older_after_edit, default=edit_at)
    rolled_at = max(last_old, first_new) if first_new is not None else None
    result.markers.append(Marker(t=edit_at, label="template edited"))
    if first_new is not None:
        result.markers.append(Marker(t=first_new, label="first answer from the new revision"))
        result.markers.append(Marker(t=last_old, label="last answer from the old revision"))
    groups = summarize(samples, key=lambda s: phase_of(s, edit_at, rolled_at))
    result.group_of = lambda s: phase_of(s, edit_at, rolled_at)
    revisions = sorted({s.revision for s in samples if s.revision})
    result.extra["rollout"] = {
        "edit_at_s": edit_at,
        "first_answer_from_new_revision_s": first_new,
        "last_answer_from_old_revision_s": last_old if first_new is not None else None,
        "revisions_seen": revisions,
    }
    all_lat = summarize(samples, key=lambda s: "all").get("all")
    result.checks += [
        Check(
            name="errors",
            value=sum(g.errors for g in groups.values()),
            limit=0,
            unit="",
            knative="0",
            digits=0,
        ),
        Check(
            name="edit to first answer from the new revision",
            value=None if first_new is None else first_new - edit_at,
            limit=_ROLLOUT_LIMIT,
            unit="s",
            knative="not a Knative bar",
        ),
        Check(
            name="p95 over the whole run",
            value=all_lat.latency_ms.p95 if all_lat and all_lat.latency_ms else None,
            limit=110.0,
            unit="ms",
            knative="p95 ≤ 110 ms (1000 rps, CC 30)",
            gating=False,
        ),
    ]
    timing = (
        f"Template edited at {edit_at:.1f} s; first answer from the new revision at {first_new:.1f} s; "
        f"last answer from the old revision at {last_old:.1f} s. Revisions seen: {', '.join(revisions)}."
        if first_new is not None
        else f"Template edited at {edit_at:.1f} s; no answer came from a new revision before the run ended."
    )
    result.sections.append(("Rollout", timing))
