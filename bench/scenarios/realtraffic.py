"""real-traffic: Services with random start-up times get requests of random latency and body sizes from the
moment `serving up` has created them, so the first requests meet pods still starting. The bar is zero errors
(Knative's real-traffic-test)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any, Final

from bench.context import Context
from bench.load.phase import generator_json, run_phase
from bench.load.schedule import Shot, Target
from bench.results.result import RunResult
from bench.results.summary import Check
from bench.system import service
from bench.system.podwatch import StatusPoller, running
from bench.system.stack import LocalSystem

_VARIANTS: Final = 32
"""Distinct requests prepared per Service; each shot picks one at random (bodies are built once)."""


def _names(count: int) -> list[str]:
    return [f"real-{i}" for i in range(1, count + 1)]


def _variants(ctx: Context, rng: random.Random, name: str, port: int) -> list[Target]:
    mean_sleep = ctx.num("sleep_ms_mean")
    max_sleep = ctx.num("sleep_ms_max")
    out = []
    for _ in range(_VARIANTS):
        sleep_ms = min(rng.expovariate(1 / mean_sleep), max_sleep) if mean_sleep > 0 else 0.0
        response = rng.randint(0, ctx.integer("response_bytes_max"))
        request = rng.randint(0, ctx.integer("request_bytes_max"))
        out.append(
            Target(
                name=name,
                port=port,
                host_header=service.host(name),
                method="POST" if request else "GET",
                path=f"/?sleep={sleep_ms:.0f}&bytes={response}",
                body=b"r" * request,
            )
        )
    return out


def _schedule(
    rng: random.Random, variants: list[list[Target]], rate: float, duration: float
) -> Iterator[Shot]:
    for i in range(round(rate * duration)):
        yield Shot(i / rate, rng.choice(rng.choice(variants)))


def documents(
    ctx: Context, rng: random.Random, names: list[str]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    docs, startups = [], {}
    for name in names:
        startup = rng.randint(0, ctx.integer("startup_ms_max"))
        startups[name] = startup
        docs.append(
            service.document(
                name,
                service.benchapp(startup_ms=startup),
                annotations={
                    service.TARGET: ctx.text("target"),
                    service.MAX_SCALE: str(ctx.integer("max_scale")),
                },
            )
        )
    return docs, startups


async def run(ctx: Context) -> RunResult:
    """All randomness comes from one seeded generator: the same seed gives the same Services and requests."""
    rng = random.Random(ctx.integer("seed"))
    rate, duration = ctx.num("rate"), ctx.num("duration")
    names = _names(ctx.integer("services"))
    result = ctx.new_result("real-traffic")
    docs, startups = documents(ctx, rng, names)
    comment = "real-traffic: Services with random start-up times."
    path = service.write(ctx.out / "services.yaml", docs, comment)
    system = LocalSystem([path], ctx.out, ctx.session)
    try:
        await system.start()
        variants = [_variants(ctx, rng, name, system.ingress_port) for name in names]
        t0 = time.monotonic() + 0.2
        poller = StatusPoller(system.control_url, ctx.session, t0, interval=1.0)
        async with running(poller):
            phase = await run_phase(
                "real-traffic",
                _schedule(rng, variants, rate, duration),
                seconds=duration,
                t0=t0,
                request_timeout=ctx.num("request_timeout"),
                progress=ctx.progress,
            )
            await poller.poll_once()
    finally:
        await system.stop()
    result.samples = phase.samples
    result.pods = poller.points
    result.generator = generator_json([phase.stats], rate)
    result.extra["startup_ms"] = startups
    result.checks.append(
        Check(
            name="errors",
            value=sum(g.errors for g in result.group_summaries().values()),
            limit=0,
            unit="",
            knative="0 (300 rps)",
            digits=0,
        )
    )
    rows = "\n".join(f"| {n} | {startups[n]} |" for n in names)
    result.sections.append(("Services", f"| Service | start-up delay (ms) |\n|---|---|\n{rows}"))
    return result
