"""`serving simulate`: replay a traffic trace through the real load windows, KPA decider and scale-to-zero
rules, offline, and print one JSON line per decider tick (optionally a chart).

Conventions (Knative's): the revision's autoscaler exists before the first sample, with no ready pods; a
sample at time t lands in the 1 s bucket floor(t); ticks fall on every multiple of the tick interval from the
first sample to the last, and the tick at T sees every sample with t <= T and the `ready_pods` of the latest.
A line with `ready_pods` and no metric is a second in which no stat arrived (a gap, as when no pod answered a
scrape): the ready pods change, nothing is recorded. A tick whose stable window holds no data makes no
decision (`"desired_pods": null`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from autoscaler.decider import TICK_INTERVAL
from autoscaler.revision import RevisionAutoscaler, Tick
from serving.autoscaling import (
    CONCURRENCY,
    PREFIX,
    RPS,
    AutoscalerConfig,
    AutoscalingError,
    RevisionScaling,
    parse_config,
    revision_scaling,
)
from serving.duration import parse_duration

EXIT_USAGE = 2


class TraceError(ValueError):
    """The trace has a bad line; the message names the line number."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One trace line: the load seen at `t` (both metrics None: no stat that second) and the ready pods."""

    line: int
    t: float
    concurrency: float | None
    rps: float | None
    ready_pods: int

    @property
    def gap(self) -> bool:
        """No stat arrived at `t`: only the ready-pod count changes."""
        return self.concurrency is None and self.rps is None


def _number(value: Any, name: str, line: int) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TraceError(f"line {line}: {name!r} must be a finite number, not {json.dumps(value)}")
    return float(value)


def parse_sample(text: str, line: int) -> Sample:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(f"line {line}: not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise TraceError(
            f'line {line}: expected an object like {{"t": 0, "concurrency": 5, "ready_pods": 1}}'
        )
    if "t" not in data:
        raise TraceError(f'line {line}: missing "t" (seconds)')
    t = _number(data["t"], "t", line)
    values: dict[str, float | None] = {}
    for name in (CONCURRENCY, RPS):
        if name in data:
            values[name] = _number(data[name], name, line)
            if values[name] < 0:  # type: ignore[operator]  # just set to a float
                raise TraceError(f"line {line}: {name!r} must not be negative")
    if "ready_pods" not in data:
        if not values:
            raise TraceError(
                f'line {line}: needs "concurrency" or "rps" with "ready_pods", or "ready_pods" alone for a '
                "second with no stat"
            )
        raise TraceError(f'line {line}: missing "ready_pods"')
    ready = data["ready_pods"]
    if isinstance(ready, bool) or not isinstance(ready, int) or ready < 0:
        raise TraceError(f'line {line}: "ready_pods" must be a whole number, 0 or more')
    unknown = sorted(set(data) - {"t", CONCURRENCY, RPS, "ready_pods"})
    if unknown:
        raise TraceError(f"line {line}: unknown field(s) {', '.join(map(json.dumps, unknown))}")
    return Sample(line, t, values.get(CONCURRENCY), values.get(RPS), ready)


def read_trace(stream: Iterable[str]) -> list[Sample]:
    samples: list[Sample] = []
    for number, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        sample = parse_sample(text, number)
        if samples and sample.t < samples[-1].t:
            raise TraceError(
                f"line {number}: t={sample.t:g} is before the previous sample's t={samples[-1].t:g}"
            )
        samples.append(sample)
    if not samples:
        raise TraceError("the trace has no samples")
    return samples


def tick_times(first: float, last: float, tick: float) -> list[float]:
    """Multiples of `tick` from the first sample's time to the last's, inclusive."""
    k = math.ceil(first / tick)
    times = []
    while k * tick <= last:
        times.append(k * tick)
        k += 1
    return times


def tick_line(t: float, tick: Tick, ready: int, scaling: RevisionScaling, replicas: int) -> dict[str, Any]:
    decision = tick.decision
    return {
        "t": t,
        "desired_pods": None if decision is None else decision.desired_pods,
        "panic": tick.panic,
        "stable": None if decision is None else decision.stable,
        "panic_value": None if decision is None else decision.panic_value,
        "excess_burst_capacity": tick.excess_burst_capacity,
        "mode": tick.outcome.mode,
        "ready_pods": ready,
        "metric": scaling.metric,
        "target": scaling.target,
        "want": tick.outcome.want,
        "replicas": replicas,
        "active": tick.outcome.active,
        "activators": tick.outcome.activators,
    }


def simulate(samples: Sequence[Sample], scaling: RevisionScaling, tick: float) -> list[dict[str, Any]]:
    """Replay `samples` and return one record per tick (see the module docstring for the conventions)."""
    first = samples[0].t
    revision = RevisionAutoscaler(scaling, now=first, ready_pods=0)
    replicas = scaling.initial_scale
    lines: list[dict[str, Any]] = []
    seen = 0
    ready = 0
    for now in tick_times(first, samples[-1].t, tick):
        while seen < len(samples) and samples[seen].t <= now:
            sample = samples[seen]
            if not sample.gap:
                revision.collection.record_values(sample.t, sample.concurrency or 0.0, sample.rps or 0.0)
            ready = sample.ready_pods
            seen += 1
        result = revision.tick(now, ready)
        if result.outcome.replicas is not None:
            replicas = result.outcome.replicas
        lines.append(tick_line(now, result, ready, scaling, replicas))
    return lines


def plot(samples: Sequence[Sample], lines: Sequence[dict[str, Any]], metric: str, path: Path) -> None:
    """Observed load, desired and ready pods on one chart, with panic periods shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, load_axis = plt.subplots(figsize=(10, 5), dpi=100)
    # A second with no stat is left blank (NaN breaks the line) rather than drawn as 0 load.
    observed = [
        math.nan if s.gap else (s.concurrency if metric == CONCURRENCY else s.rps) or 0.0 for s in samples
    ]
    load_axis.step(
        [s.t for s in samples], observed, where="post", color="tab:blue", label=f"observed {metric}"
    )
    stable = [(line["t"], line["stable"]) for line in lines if line["stable"] is not None]
    if stable:
        load_axis.plot(*zip(*stable, strict=True), color="tab:cyan", linestyle="--", label=f"stable {metric}")
    load_axis.set_xlabel("time (s)")
    load_axis.set_ylabel(metric)
    load_axis.set_ylim(bottom=0)
    pods_axis = load_axis.twinx()
    decided = [(line["t"], line["desired_pods"]) for line in lines if line["desired_pods"] is not None]
    if decided:
        pods_axis.step(*zip(*decided, strict=True), where="post", color="tab:red", label="desired pods")
    pods_axis.step(
        [line["t"] for line in lines],
        [line["ready_pods"] for line in lines],
        where="post",
        color="tab:green",
        alpha=0.6,
        label="ready pods",
    )
    pods_axis.set_ylabel("pods")
    pods_axis.set_ylim(bottom=0)
    start: float | None = None
    for line in [*lines, {"t": lines[-1]["t"], "panic": False}] if lines else []:
        if line["panic"] and start is None:
            start = line["t"]
        elif not line["panic"] and start is not None:
            load_axis.axvspan(start, line["t"], color="tab:orange", alpha=0.2, label="panic")
            start = None
    handles, labels = [], []
    for axis in (load_axis, pods_axis):
        h, lab = axis.get_legend_handles_labels()
        handles += h
        labels += lab
    unique = dict(zip(labels, handles, strict=True))
    load_axis.legend(unique.values(), unique.keys(), loc="upper left")
    load_axis.set_title("serving simulate: KPA decisions")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _pairs(items: Sequence[str], what: str, problems: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            problems.append(f"{what} {item!r} must look like KEY=VALUE")
            continue
        pairs[key.strip()] = value
    return pairs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serving simulate",
        description="Replay a traffic trace (JSON lines {t, concurrency|rps, ready_pods}, or {t, ready_pods} "
        "for a second with no stat) through the KPA.",
    )
    parser.add_argument("trace", help="trace file, or - for standard input")
    parser.add_argument(
        "--annotation",
        action="append",
        default=[],
        metavar="autoscaling.knative.dev/KEY=VALUE",
        help="revision annotation (repeatable); the prefix may be left out",
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config-autoscaler setting (repeatable), e.g. max-scale-up-rate=2",
    )
    parser.add_argument("--container-concurrency", type=int, default=0, metavar="N", help="0 = unlimited")
    parser.add_argument("--tick", default=f"{TICK_INTERVAL:g}s", help="decider interval (Go duration), 2s")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the run to a PNG file")
    return parser


def _settings(args: argparse.Namespace, samples: Sequence[Sample]) -> tuple[RevisionScaling, float]:
    problems: list[str] = []
    config_pairs = _pairs(args.config, "--config", problems)
    annotations = {
        (key if "/" in key else PREFIX + key): value
        for key, value in _pairs(args.annotation, "--annotation", problems).items()
    }
    try:
        tick = parse_duration(args.tick)
        if tick <= 0:
            problems.append(f"--tick {args.tick} must be positive")
    except ValueError as exc:
        problems.append(f"--tick: {exc}")
        tick = TICK_INTERVAL
    config = AutoscalerConfig()
    try:
        config = parse_config(config_pairs)
    except AutoscalingError as exc:
        problems += [f"--config {p}" for p in exc.problems]
    metric_key = PREFIX + "metric"
    stats = [s for s in samples if not s.gap]
    if metric_key not in annotations and stats and all(s.concurrency is None for s in stats):
        annotations[metric_key] = RPS  # a trace of rps only scales on rps
    if problems:
        raise AutoscalingError(problems)
    scaling = revision_scaling(annotations, args.container_concurrency, config)
    field = CONCURRENCY if scaling.metric == CONCURRENCY else RPS
    for sample in stats:
        if (sample.concurrency if field == CONCURRENCY else sample.rps) is None:
            raise TraceError(f"line {sample.line}: no {field!r} value, but the revision scales on {field}")
    return scaling, tick


def _read(source: str) -> list[Sample]:
    if source == "-":
        return read_trace(sys.stdin)
    with open(source, encoding="utf-8") as stream:
        return read_trace(stream)


def _write(lines: Iterable[dict[str, Any]], out: TextIO) -> None:
    for line in lines:
        out.write(json.dumps(line) + "\n")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        print(
            "serving simulate: --plot needs matplotlib, which is not installed: pip install 'serving[bench]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        samples = _read(args.trace)
        scaling, tick = _settings(args, samples)
    except OSError as exc:
        print(f"serving simulate: cannot read {args.trace}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except TraceError as exc:
        print(f"serving simulate: {args.trace}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AutoscalingError as exc:
        print("serving simulate: invalid settings:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_USAGE
    for note in scaling.notes:
        print(f"serving simulate: note: {note}", file=sys.stderr)
    lines = simulate(samples, scaling, tick)
    _write(lines, sys.stdout)
    if args.plot is not None:
        try:
            plot(samples, lines, scaling.metric, args.plot)
        except OSError as exc:
            print(f"serving simulate: cannot write {args.plot}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    return 0
