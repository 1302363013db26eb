"""scale-from-zero: N Services at zero woken by one request each at the same instant (N = 1, 5, 25 by
default), each group in its own `serving up`; per Service, the time to the first 200 split into its parts
(`bench.scenarios.wake`). With app=image the Services name only a local image, and run as containers."""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

from bench.context import Context
from bench.load.generator import RunStats
from bench.load.phase import generator_json, run_phase
from bench.load.sample import Sample
from bench.load.schedule import Shot, Target, constant_rate
from bench.preset import ParamError
from bench.results.result import Marker, RunResult
from bench.scenarios import floor
from bench.scenarios.floor import FloorRun
from bench.scenarios.wake import Wake, floor_table, judge, wake_of
from bench.system import service
from bench.system.podwatch import PodLifecycle, PodPoint, StatusPoller, running
from bench.system.stack import LocalSystem, at_zero
from bench.system.stack import services as status_services
from controller.local.runtime import container
from controller.local.runtime.container import ContainerRuntime

_GROUP_GAP: Final = 5.0
"""Seconds between groups on the plots' shared time axis."""
_LIFECYCLE_SETTLE: Final = 1.0
"""Seconds allowed after the last answer for the watch stream to deliver the last ready transitions."""


def _names(count: int) -> list[str]:
    return [f"sfz-{count}-{i:02d}" for i in range(1, count + 1)]


def _app(ctx: Context) -> service.App:
    app, image = ctx.text("app"), ctx.text("image")
    if app == "image":
        if not image:
            raise ParamError(
                ["parameter 'image' is required with app=image: the local image to run (set image=REF)"]
            )
        return service.image_app(image)
    if image:
        raise ParamError([f"parameter 'image' ({image}) is only used with app=image: set app=image too"])
    if app == "benchapp":
        return service.benchapp(sleep_ms=0)
    if app != "helloworld":
        raise ParamError([f"parameter 'app' must be helloworld, benchapp or image, not {app!r}"])
    # The example is not part of the package: it is found in a checkout of serving (relative paths from the
    # working directory), and written into the Service files as an absolute folder.
    folder = Path(ctx.text("helloworld_dir")).absolute()
    if not (folder / "app.py").is_file():
        raise ParamError(
            [
                f"parameter 'helloworld_dir': {folder} has no app.py (the hello-world example of a checkout"
                " of serving); run from the checkout, set helloworld_dir=PATH, or set app=benchapp"
            ]
        )
    return service.helloworld(folder)


def _label(app: service.App, ctx: Context) -> str:
    return f"image {app.image}" if app.from_image else ctx.text("app")


async def _runtime(app: service.App) -> ContainerRuntime:
    """The container runtime `serving up --runtime auto` picks (the floor starts the image with it), once
    `app.image` is known to be in its local storage: a pull would be timed as part of the first wake."""
    try:
        runtime = await container.detect(container.AUTO)
    except container.RuntimeUnavailable as exc:
        raise ParamError([f"parameter 'app': app=image runs containers, but {exc}"]) from None
    if not await container.image_present(runtime, app.image):
        raise ParamError(
            [
                f"parameter 'image': {app.image} is not in {runtime.name}'s local storage; build or load it "
                f"first ({runtime.name} build -t {app.image} FOLDER)"
            ]
        )
    return runtime


def _shots(targets: list[Target], rate: float, duration: float) -> Iterator[Shot]:
    """Every target's first request at offset 0 (the wake), then `rate` per second each."""
    return heapq.merge(*(constant_rate([t], rate, duration) for t in targets), key=lambda s: s.at)


def documents(ctx: Context, count: int) -> list[dict[str, Any]]:
    app = _app(ctx)
    annotations = {service.WINDOW: ctx.text("window")}
    return [service.document(name, app, annotations=annotations) for name in _names(count)]


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
    path = service.write(workdir / "services.yaml", docs, f"scale-from-zero: {count} Services woken at once.")
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
            Target(name=name, port=system.ingress_port, host_header=service.host(name)) for name in names
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
    wakes = [wake_of(count, n, by_target[n], life, revision[n], t0_unix) for n in names if n in by_target]
    return _GroupRun(samples=phase.samples, stats=phase.stats, pods=poller.points, wakes=wakes)


async def _settle(life: PodLifecycle, revisions: list[str]) -> None:
    deadline = time.monotonic() + _LIFECYCLE_SETTLE
    while time.monotonic() < deadline:
        pods = [life.first_pod(r) for r in revisions]
        if all(p is not None and p.ready_at is not None for p in pods):
            return
        await asyncio.sleep(0.05)


async def run(ctx: Context) -> RunResult:
    """With `floor` on, each group size is first run without the platform (`bench.scenarios.floor`: the same
    commands, or containers of the same image, started at once): on a small machine most of a wide wake is the
    apps competing for CPU, and the floor shows how much of the wake is theirs and how much the platform's."""
    app = _app(ctx)
    runtime = await _runtime(app) if app.from_image else None
    label = _label(app, ctx)
    result = ctx.new_result(f"scale-from-zero ({label})")
    wakes: list[Wake] = []
    stats: list[RunStats] = []
    floors: list[FloorRun] = []
    if ctx.flag("floor"):
        # One unmeasured start first: the wakes find the app's files in the page cache, and so must the floor.
        logs = ctx.out / "floor"
        within = ctx.num("request_timeout")
        await floor.run(app, 1, ctx.session, within, logs / "warm-up", runtime)
        for count in ctx.ints("counts"):
            floors.append(await floor.run(app, count, ctx.session, within, logs, runtime))
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
    judge(label, result, wakes)
    if floors:
        copies = "the same commands"
        if runtime is not None:
            copies = f"containers of {app.image} (`{runtime.describe()} run` with the platform's flags)"
        result.extra["floor"] = [asdict(f) for f in floors]
        result.sections.append(("The same apps without the platform", floor_table(floors, wakes, copies)))
    return result
