"""dataplane-probe: what each proxy hop costs. One app at a constant rate, directly, through its pod's
queue-proxy, through ingress + queue-proxy and through ingress + activator + queue-proxy, one path after the
other; once with an app that sleeps (Knative's 100 ms) and once with one that answers at once."""

from __future__ import annotations

import time
from typing import Any, Final

from bench.context import Context
from bench.load.phase import generator_json, run_phase
from bench.load.schedule import Target, constant_rate
from bench.results.result import Marker, RunResult
from bench.results.summary import Check, GroupSummary
from bench.system import service
from bench.system.stack import BareApp, LocalSystem, StackError, revisions
from serving.platformclient import HttpPlatform

DIRECT: Final = "direct"
QUEUE: Final = "queue-proxy"
INGRESS_QUEUE: Final = "ingress + queue-proxy"
ACTIVATOR: Final = "ingress + activator + queue-proxy"
PATHS: Final = (DIRECT, QUEUE, INGRESS_QUEUE, ACTIVATOR)
_GAP: Final = 1.0
"""Seconds of quiet between paths, so one path's tail does not overlap the next one's start."""
_LEAD: Final = 0.05
"""Seconds between the end of a warm-up and the first measured request, for the generator to start."""


def app_kinds(ctx: Context) -> list[tuple[str, float]]:
    sleep_ms = ctx.num("sleep_ms")
    kinds = []
    for app in ctx.params["apps"]:
        if app == "sleep":
            kinds.append((f"sleep-{sleep_ms:g}ms", sleep_ms))
        elif app == "instant":
            kinds.append(("instant", 0.0))
        else:
            raise StackError(f"unknown app {app!r} in 'apps' (use sleep and/or instant)")
    return kinds


def documents(kinds: list[tuple[str, float]]) -> list[dict[str, Any]]:
    docs = []
    for kind, sleep_ms in kinds:
        app = service.benchapp(sleep_ms=sleep_ms)
        # min-scale 1 keeps a pod warm; TBC 0 takes the activator out of the path once a pod is ready
        # (Serve mode), TBC -1 keeps it in the path always (Proxy mode): Knative's two dataplane set-ups.
        docs.append(
            service.document(
                f"probe-{kind}-qp",
                app,
                annotations={service.MIN_SCALE: "1", service.TARGET_BURST_CAPACITY: "0"},
            )
        )
        docs.append(
            service.document(
                f"probe-{kind}-act",
                app,
                annotations={service.MIN_SCALE: "1", service.TARGET_BURST_CAPACITY: "-1"},
            )
        )
    return docs


def _settled(status: dict[str, Any], names: list[str]) -> bool:
    """Every probe service has a ready pod, and each is in the mode its set-up asks for."""
    by_service = {s["name"]: s for s in status.get("services", [])}
    for name in names:
        svc = by_service.get(name)
        if svc is None or not svc.get("revisions"):
            return False
        rev = svc["revisions"][0]
        want = "Proxy" if name.endswith("-act") else "Serve"
        if rev.get("ready_pods", 0) < 1 or rev.get("mode") != want:
            return False
    return True


async def run(ctx: Context) -> RunResult:
    """Each path in turn, after a warm-up; the activator path is a Service pinned to Proxy mode
    (target-burst-capacity -1), the ingress path one in Serve mode (0)."""
    rate, duration, warmup = ctx.num("rate"), ctx.num("duration"), ctx.num("warmup")
    kinds = app_kinds(ctx)
    result = ctx.new_result("dataplane-probe")
    docs = documents(kinds)
    path = service.write(ctx.out / "services.yaml", docs, "dataplane-probe: Services run by `serving up`.")
    system = LocalSystem([path], ctx.out, ctx.session)
    bare = {kind: BareApp(ctx.out, {"SLEEP_MS": f"{ms:g}"}, name=f"app-{kind}") for kind, ms in kinds}
    names = [d["metadata"]["name"] for d in docs]
    try:
        await system.start()
        for app in bare.values():
            await app.start()
        status = await system.wait_for("every probe Service ready in its mode", lambda s: _settled(s, names))
        snapshot = await HttpPlatform(system.platform_url, ctx.session).snapshot()
        pod_port = {rev.service: rev.pods[0].port for rev in snapshot.revisions if rev.pods}
        plan: list[Target] = []
        for kind, _ in kinds:
            qp_service, act_service = f"probe-{kind}-qp", f"probe-{kind}-act"
            if qp_service not in pod_port:
                raise StackError(f"no pod listed for {qp_service} on the platform API")
            plan += [
                Target(name=f"{kind}: {DIRECT}", port=bare[kind].port),
                Target(
                    name=f"{kind}: {QUEUE}", port=pod_port[qp_service], host_header=service.host(qp_service)
                ),
                Target(
                    name=f"{kind}: {INGRESS_QUEUE}",
                    port=system.ingress_port,
                    host_header=service.host(qp_service),
                ),
                Target(
                    name=f"{kind}: {ACTIVATOR}",
                    port=system.ingress_port,
                    host_header=service.host(act_service),
                ),
            ]
        t0 = time.monotonic() + 0.1
        offset = 0.0
        stats = []
        for target in plan:
            # Warm-up opens the connections and fills caches along the path; its samples are not kept.
            warm = Target(name=f"{target.name} (warm-up)", port=target.port, host_header=target.host_header)
            await run_phase(
                f"{target.name} warm-up",
                constant_rate([warm], rate, warmup, start=offset),
                seconds=warmup,
                t0=t0,
                progress=ctx.progress,
            )
            # The warm-up returns once its last answers are in (an app's delay after its last send): the
            # measured schedule starts after that, or its first requests would count the warm-up's tail.
            offset = max(offset + warmup, time.monotonic() - t0 + _LEAD)
            result.markers.append(Marker(t=offset, label=target.name))
            phase = await run_phase(
                target.name,
                constant_rate([target], rate, duration, start=offset),
                seconds=duration,
                t0=t0,
                progress=ctx.progress,
            )
            result.samples += phase.samples
            stats.append(phase.stats)
            offset = max(offset + duration, time.monotonic() - t0) + _GAP
        result.generator = generator_json(stats, rate)
        result.extra["revisions"] = sorted(revisions(status))
    finally:
        for app in bare.values():
            await app.stop()
        await system.stop()
    groups = result.group_summaries()
    _judge(result, groups, kinds, rate)
    return result


def _p95(groups: dict[str, GroupSummary], name: str) -> float | None:
    group = groups.get(name)
    return group.latency_ms.p95 if group is not None and group.latency_ms is not None else None


def _judge(
    result: RunResult, groups: dict[str, GroupSummary], kinds: list[tuple[str, float]], rate: float
) -> None:
    sleepy = [kind for kind, ms in kinds if ms > 0]
    at = f"{rate:g} rps"
    if sleepy:
        kind = sleepy[0]
        result.checks += [
            Check(
                name=f"{kind} via queue-proxy: p95 at {at}",
                value=_p95(groups, f"{kind}: {QUEUE}"),
                limit=105.0,
                unit="ms",
                knative="≤ 110 ms (1000 rps, 5 pods)",
            ),
            Check(
                name=f"{kind} via activator + queue-proxy: p95 at {at}",
                value=_p95(groups, f"{kind}: {ACTIVATOR}"),
                limit=108.0,
                unit="ms",
                knative="≤ 110 ms (1000 rps, 5 pods)",
            ),
            Check(
                name=f"{kind} direct: p95 at {at}",
                value=_p95(groups, f"{kind}: {DIRECT}"),
                limit=105.0,
                unit="ms",
                knative="≤ 105 ms (1000 rps, 5 pods)",
                gating=False,
            ),
        ]
    result.checks.append(
        Check(
            name="errors, all paths",
            value=sum(g.errors for g in groups.values()),
            limit=0,
            unit="",
            knative="0",
            digits=0,
        )
    )
    result.sections.append(("Cost of each hop", _hops_table(groups, kinds)))


def _hops_table(groups: dict[str, GroupSummary], kinds: list[tuple[str, float]]) -> str:
    lines = [
        "Latency added over the direct path (same app, same rate), in ms:",
        "",
        "| app | path | p50 | p95 | p99 | p50 added | p95 added |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, _ in kinds:
        base = groups.get(f"{kind}: {DIRECT}")
        base_lat = base.latency_ms if base is not None else None
        for path in PATHS:
            group = groups.get(f"{kind}: {path}")
            lat = group.latency_ms if group is not None else None
            if lat is None:
                continue
            added50 = f"{lat.p50 - base_lat.p50:+.2f}" if base_lat else "-"
            added95 = f"{lat.p95 - base_lat.p95:+.2f}" if base_lat else "-"
            lines.append(
                f"| {kind} | {path} | {lat.p50:.2f} | {lat.p95:.2f} | {lat.p99:.2f} | {added50} | {added95} |"
            )
    return "\n".join(lines)
