"""scale-from-zero: N Services at zero woken by one request each at the same instant (N = 1, 5, 25 by
default), each group in its own `serving up`. Per Service: time to the first 200, split into the wait for the
pod to start, its readiness, the activator's own delay after the pod was ready, and the answer itself.

The parts come from the platform's watch stream (when each pod started and was first seen ready) and from the
`Server-Timing: activator;dur=` header (how long the request waited in the activator).

With `floor` on, each group size is first run without the platform (`controller.bench.floor`: the same
commands started at once, straight from the scenario): on a small machine, most of a wide wake is the apps
competing for CPU, and the floor shows how much of the wake is theirs and how much the platform's.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

from controller.bench import floor, services
from controller.bench.loadgen import RunStats, Shot, Target, constant_rate
from controller.bench.phase import generator_json, run_phase
from controller.bench.plot import Marker, PodPoint
from controller.bench.podwatch import PodLifecycle, StatusPoller, running
from controller.bench.result import RunResult
from controller.bench.sample import Sample
from controller.bench.scenarios import Context
from controller.bench.stack import LocalSystem, at_zero
from controller.bench.stack import services as status_services
from controller.bench.summary import Check, Distribution, percentile

PARTS: Final = ("until pod start", "pod start to ready", "activator after ready", "proxy and app")
_GROUP_GAP: Final = 5.0
"""Seconds between groups on the plots' shared time axis."""
_LIFECYCLE_SETTLE: Final = 1.0
"""Seconds allowed after the last answer for the watch stream to deliver the last ready transitions."""


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


def _names(count: int) -> list[str]:
    return [f"sfz-{count}-{i:02d}" for i in range(1, count + 1)]


def _app(ctx: Context) -> services.App:
    app = ctx.text("app")
    if app == "helloworld":
        return services.helloworld()
    return services.benchapp(sleep_ms=0)


def _shots(targets: list[Target], rate: float, duration: float) -> Iterator[Shot]:
    """Every target's first request at offset 0 (the wake), then `rate` per second each."""
    return heapq.merge(*(constant_rate([t], rate, duration) for t in targets), key=lambda s: s.at)


def _wake(
    group: int, name: str, samples: list[Sample], life: PodLifecycle, revision: str, t0_unix: float
) -> Wake:
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


def documents(ctx: Context, count: int) -> list[dict[str, Any]]:
    app = _app(ctx)
    annotations = {services.WINDOW: ctx.text("window")}
    return [services.service(name, app, annotations=annotations) for name in _names(count)]


@dataclass(frozen=True, slots=True, kw_only=True)
class _GroupRun:
    samples: list[Sample]
    stats: RunStats
    pods: list[PodPoint]
    wakes: list[Wake]


async def _group(ctx: Context, count: int) -> _GroupRun:
    """Start a `serving up` with `count` Services, let them reach zero, wake them all at once."""
    names = _names(count)
    docs = documents(ctx, count)
    workdir = ctx.out / f"group-{count}"
    path = services.write(
        workdir / "services.yaml", docs, f"scale-from-zero: {count} Services woken at once."
    )
    system = LocalSystem(
        [path],
        workdir,
        ctx.session,
        args=["--autoscaler-config", f"scale-to-zero-grace-period={ctx.text('grace')}"],
    )
    try:
        await system.start()
        status = await system.wait_for(
            f"{count} Services scaled to zero",
            lambda s: at_zero(s, names),
            within=ctx.num("settle_timeout"),
        )
        revision = {name: svc["revisions"][0]["name"] for name, svc in status_services(status).items()}
        targets = [
            Target(name=name, port=system.ingress_port, host_header=services.host(name)) for name in names
        ]
        life = PodLifecycle(system.platform_url, ctx.session)
        t0 = time.monotonic() + 0.3
        t0_unix = time.time() + (t0 - time.monotonic())
        poller = StatusPoller(system.control_url, ctx.session, t0, interval=0.5)
        async with running(life, poller):
            phase = await run_phase(
                f"wake {count}",
                _shots(targets, ctx.num("rate"), ctx.num("duration")),
                seconds=ctx.num("duration"),
                t0=t0,
                request_timeout=ctx.num("request_timeout"),
                progress=ctx.progress,
            )
            await _settle(life, [revision[n] for n in names])
            await poller.poll_once()  # the state at the end, which the last periodic poll may have missed
    finally:
        await system.stop()
    by_target: dict[str, list[Sample]] = {}
    for sample in phase.samples:
        by_target.setdefault(sample.target, []).append(sample)
    wakes = [_wake(count, n, by_target[n], life, revision[n], t0_unix) for n in names if n in by_target]
    return _GroupRun(samples=phase.samples, stats=phase.stats, pods=poller.points, wakes=wakes)


async def _settle(life: PodLifecycle, revisions: list[str]) -> None:
    deadline = time.monotonic() + _LIFECYCLE_SETTLE
    while time.monotonic() < deadline:
        pods = [life.first_pod(r) for r in revisions]
        if all(p is not None and p.ready_at is not None for p in pods):
            return
        await asyncio.sleep(0.05)


async def run(ctx: Context) -> RunResult:
    result = ctx.new_result(f"scale-from-zero ({ctx.text('app')})")
    wakes: list[Wake] = []
    stats: list[RunStats] = []
    floors: list[floor.FloorRun] = []
    if ctx.flag("floor"):
        # One unmeasured start first: the wakes find the app's files in the page cache, and so must the floor.
        logs = ctx.out / "floor"
        await floor.run(_app(ctx), 1, ctx.session, ctx.num("request_timeout"), logs / "warm-up")
        for count in ctx.ints("counts"):
            floors.append(await floor.run(_app(ctx), count, ctx.session, ctx.num("request_timeout"), logs))
    for count in ctx.ints("counts"):
        group = await _group(ctx, count)
        # Groups run one after the other; each is shifted onto one time axis for the plots.
        offset = max((s.scheduled for s in result.samples), default=-_GROUP_GAP) + _GROUP_GAP
        result.samples += [replace(s, scheduled=s.scheduled + offset) for s in group.samples]
        result.pods += [replace(p, t=p.t + offset) for p in group.pods]
        result.markers.append(Marker(t=offset, label=f"wake {count}"))
        stats.append(group.stats)
        wakes += group.wakes
    result.generator = generator_json(stats, None)  # a burst per group, not one constant rate
    group_of = {w.service: f"{w.group} at once" for w in wakes}
    result.group_of = lambda s: group_of.get(s.target, s.target)
    result.breakdown = {w.service: w.parts() for w in wakes}
    result.extra["wakes"] = [asdict(w) for w in wakes]
    _judge(ctx, result, wakes)
    if floors:
        result.extra["floor"] = [asdict(f) for f in floors]
        result.sections.append(("The same apps without the platform", _floor_table(floors, wakes)))
    return result


def _judge(ctx: Context, result: RunResult, wakes: list[Wake]) -> None:
    after_ready = Distribution.of(
        max(w.activator_after_ready, 0.0) for w in wakes if w.activator_after_ready is not None
    )
    app = ctx.text("app")
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


def _floor_table(floors: list[floor.FloorRun], wakes: list[Wake]) -> str:
    lines = [
        "Milliseconds to the first 200 when the same commands are started at the same instant with no "
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
