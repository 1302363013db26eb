"""load-test: a Service at zero gets stepped constant rates (Knative: 1k, 2k, 3k rps; here scaled to the
machine) with the autoscaler live. Latency per step, pods over time, errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import chain
from typing import Any, Final

from bench.context import Context
from bench.load.phase import generator_json, run_phase
from bench.load.schedule import Shot, Target, constant_rate
from bench.results.result import Marker, RunResult
from bench.results.summary import Check
from bench.system import service
from bench.system.podwatch import PodPoint, StatusPoller, running
from bench.system.stack import LocalSystem, at_zero

SERVICE: Final = "load-test"


def step_rates(rate: float, steps: list[float]) -> list[float]:
    """Rates of the steps: `steps` are relative sizes, the largest runs at `rate`."""
    top = max(steps)
    return [rate * s / top for s in steps]


def document(ctx: Context) -> dict[str, Any]:
    """The Service has a low soft concurrency target so that the small rates of a small machine still need
    several pods: the point is the autoscaler scaling from zero and up under load, not the app's speed."""
    app = service.benchapp(sleep_ms=ctx.num("sleep_ms"))
    annotations = {service.TARGET: ctx.text("target"), service.WINDOW: ctx.text("window")}
    return service.document(SERVICE, app, annotations=annotations)


def _schedule(target: Target, rates: list[float], seconds: float) -> Iterator[Shot]:
    return chain.from_iterable(
        constant_rate([target], r, seconds, start=i * seconds) for i, r in enumerate(rates)
    )


async def run(ctx: Context) -> RunResult:
    rates = step_rates(ctx.num("rate"), [float(s) for s in ctx.params["steps"]])
    seconds = ctx.num("duration")
    result = ctx.new_result("load-test")
    path = service.write(
        ctx.out / "services.yaml", [document(ctx)], "load-test: the Service under stepped load."
    )
    system = LocalSystem(
        [path],
        ctx.out,
        ctx.session,
        args=["--autoscaler-config", f"scale-to-zero-grace-period={ctx.text('grace')}"],
    )
    try:
        await system.start()
        await system.wait_for(
            f"{SERVICE} scaled to zero", lambda s: at_zero(s, [SERVICE]), within=ctx.num("settle_timeout")
        )
        target = Target(name=SERVICE, port=system.ingress_port, host_header=service.host(SERVICE))
        t0 = time.monotonic() + 0.2
        poller = StatusPoller(system.control_url, ctx.session, t0, interval=1.0)
        async with running(poller):
            phase = await run_phase(
                "load-test",
                _schedule(target, rates, seconds),
                seconds=seconds * len(rates),
                t0=t0,
                request_timeout=ctx.num("request_timeout"),
                progress=ctx.progress,
            )
            await poller.poll_once()
    finally:
        await system.stop()
    result.samples = phase.samples
    result.pods = poller.points
    result.generator = generator_json([phase.stats], sum(rates) / len(rates))  # steps of equal length
    for i, r in enumerate(rates):
        result.markers.append(Marker(t=i * seconds, label=f"{r:g} rps"))
        result.rates += [(i * seconds, r), ((i + 1) * seconds, r)]

    def step_of(t: float) -> str:
        i = min(int(t // seconds), len(rates) - 1)
        return f"step {i + 1}: {rates[i]:.3g} rps"

    result.group_of = lambda s: step_of(s.scheduled)
    groups = result.group_summaries()
    result.checks.append(
        Check(
            name="errors",
            value=sum(g.errors for g in groups.values()),
            limit=0,
            unit="",
            knative="0",
            digits=0,
        )
    )
    for name, group in groups.items():
        lat = group.latency_ms
        result.checks += [
            Check(
                name=f"{name}: p95",
                value=lat.p95 if lat else None,
                limit=115.0,
                unit="ms",
                knative="p95 ≤ 115 ms (1k-3k rps)",
                gating=False,
            ),
            Check(
                name=f"{name}: max",
                value=lat.max if lat else None,
                limit=10_000.0,
                unit="ms",
                knative="max ≤ 10 s",
                gating=False,
            ),
        ]
    result.sections.append(("Pods per step", _pods_table(poller.points, rates, seconds)))
    return result


def _pods_table(points: list[PodPoint], rates: list[float], seconds: float) -> str:
    lines = [
        "| step | rate (rps) | ready pods at end | most ready pods | most desired |",
        "|---|---|---|---|---|",
    ]
    for i, rate in enumerate(rates):
        inside = [p for p in points if i * seconds <= p.t < (i + 1) * seconds]
        if not inside:
            continue
        desired = [p.desired for p in inside if p.desired is not None]
        lines.append(
            f"| {i + 1} | {rate:g} | {inside[-1].ready} | {max(p.ready for p in inside)} "
            f"| {max(desired) if desired else '-'} |"
        )
    return "\n".join(lines)
