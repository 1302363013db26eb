"""PNG plots of a benchmark run (matplotlib's Agg renderer): latency over time and by percentile, pods over
time, and scale-from-zero's split of each time to first response. matplotlib (the `bench` extra) is imported
only inside the functions that draw; they build `Figure`s rather than use pyplot, so no global state stays."""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bench.load.sample import Sample
from bench.results.result import Marker
from bench.results.summary import timeline
from bench.system.podwatch import PodPoint

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_MAX_POINTS: Final = 20_000
"""Scatter plots keep a random subset beyond this many points (the shape stays, the file stays small)."""
_DPI: Final = 100


def available() -> bool:
    """Whether matplotlib can be imported (found, and not blocked), checked without importing it."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


_MAX_SERIES: Final = 8
"""More revisions than this on the pods plot are drawn as one total (a legend of dozens helps nobody)."""


def _grouped(samples: Sequence[Sample], key: Callable[[Sample], str] | None) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(key(sample) if key else sample.target, []).append(sample)
    return groups


def _totals(points: Sequence[PodPoint]) -> list[PodPoint]:
    """One point per poll time summing every revision (polls stamp all revisions with the same `t`)."""
    by_t: dict[float, list[PodPoint]] = {}
    for point in points:
        by_t.setdefault(point.t, []).append(point)
    label = f"all {len({p.revision for p in points})} revisions"
    return [
        PodPoint(
            t=t,
            revision=label,
            desired=sum(p.desired or 0 for p in group),
            actual=sum(p.actual for p in group),
            ready=sum(p.ready for p in group),
            mode=None,
        )
        for t, group in sorted(by_t.items())
    ]


def _mark(ax: Axes, markers: Sequence[Marker]) -> None:
    for marker in markers:
        ax.axvline(marker.t, color="grey", linestyle=":", linewidth=1)
        ax.annotate(
            marker.label,
            (marker.t, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
            color="grey",
        )


def latency_over_time(
    path: Path,
    samples: Sequence[Sample],
    title: str,
    markers: Sequence[Marker] = (),
    key: Callable[[Sample], str] | None = None,
) -> None:
    """Every request's latency at its scheduled time (errors in red), with the p95 of each second; one
    colour per group (by target unless `key` says otherwise)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5.5), dpi=_DPI)
    ax = fig.add_subplot()
    rng = random.Random(0)
    for name, group in _grouped(samples, key).items():
        answered = [s for s in group if s.status > 0]
        if len(answered) > _MAX_POINTS:
            answered = rng.sample(answered, _MAX_POINTS)
        points = ax.scatter(
            [s.scheduled for s in answered],
            [s.latency * 1000 for s in answered],
            s=3,
            alpha=0.35,
            label=f"{name}",
        )
        p95 = [(b.t + 0.5, b.p95_ms) for b in timeline(group) if b.p95_ms is not None]
        ax.plot(
            [t for t, _ in p95],
            [v for _, v in p95],
            color=points.get_facecolor()[0],
            linewidth=1.2,
            label=f"{name} p95/s",
        )
    failed = [s for s in samples if not s.ok]
    if failed:
        ax.scatter(
            [s.scheduled for s in failed],
            [max(s.latency * 1000, 0.01) for s in failed],
            s=12,
            marker="x",
            color="red",
            label=f"errors ({len(failed)})",
        )
    _mark(ax, markers)
    ax.set_yscale("log")
    ax.set_xlabel("scheduled send time (s)")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)


def latency_distribution(
    path: Path, samples: Sequence[Sample], title: str, key: Callable[[Sample], str] | None = None
) -> None:
    """Latency by percentile (a CDF with the tail stretched out), one line per target."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 5), dpi=_DPI)
    ax = fig.add_subplot()
    for name, group in _grouped(samples, key).items():
        ordered = sorted(s.latency * 1000 for s in group if s.status > 0)
        if not ordered:
            continue
        n = len(ordered)
        # x = "nines": 1/(1 - q) on a log axis, so p50, p90, p99, p99.9 are evenly spaced.
        xs = [1 / (1 - (i + 0.5) / n) for i in range(n)]
        ax.plot(xs, ordered, label=f"{name} (n={n})")
    ax.set_xscale("log")
    ticks = [2, 10, 20, 100, 1000]
    ax.set_xticks(ticks, ["p50", "p90", "p95", "p99", "p99.9"])
    ax.set_xlim(1, max(ticks))
    ax.set_yscale("log")
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)


def pods_over_time(
    path: Path,
    points: Sequence[PodPoint],
    title: str,
    rates: Sequence[tuple[float, float]] = (),
    markers: Sequence[Marker] = (),
) -> None:
    """Ready and desired pods per revision as steps; the offered request rate on a second axis when given."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(13, 5), dpi=_DPI)
    ax = fig.add_subplot()
    revisions: dict[str, list[PodPoint]] = {}
    for point in points:
        revisions.setdefault(point.revision, []).append(point)
    if len(revisions) > _MAX_SERIES:
        points = _totals(points)
        revisions = {points[0].revision: list(points)}
    for name, series in revisions.items():
        line = ax.step([p.t for p in series], [p.ready for p in series], where="post", label=f"{name} ready")
        color = line[0].get_color()
        desired = [(p.t, p.desired) for p in series if p.desired is not None]
        if desired:
            ax.step(
                [t for t, _ in desired],
                [d for _, d in desired],
                where="post",
                linestyle="--",
                color=color,
                alpha=0.6,
                label=f"{name} desired",
            )
    ax.set_xlabel("time (s)")
    ax.set_ylabel("pods")
    top = max((max(p.ready, p.desired or 0) for p in points), default=0)
    ax.set_ylim(0, top + 1)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if rates:
        ax2 = ax.twinx()
        ax2.plot([t for t, _ in rates], [r for _, r in rates], color="black", alpha=0.4, label="offered rps")
        ax2.set_ylabel("offered requests/s")
        ax2.set_ylim(bottom=0)
        ax2.legend(fontsize=7, loc="upper left")
    _mark(ax, markers)
    if revisions:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.08, 1.0))
    fig.tight_layout()
    fig.savefig(path)


def breakdown_bars(path: Path, rows: Mapping[str, Mapping[str, float]], title: str) -> None:
    """Stacked horizontal bars: each row (service) split into named parts (ms), stacked in the given order."""
    from matplotlib.figure import Figure

    names = list(rows)
    parts: list[str] = []
    for row in rows.values():
        parts += [p for p in row if p not in parts]
    fig = Figure(figsize=(10, max(3.0, 0.28 * len(names) + 1.5)), dpi=_DPI)
    ax = fig.add_subplot()
    left = [0.0] * len(names)
    for part in parts:
        widths = [max(rows[n].get(part, 0.0), 0.0) for n in names]
        ax.barh(names, widths, left=left, label=part)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("ms")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
