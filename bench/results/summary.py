"""Summaries of benchmark samples: percentiles, errors and achieved rates per group, and per-second
timelines."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.load.sample import Sample

PERCENTILES = (50.0, 90.0, 95.0, 99.0)


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence; p in (0, 100]: the smallest observed value with at
    least p % of the values at or below it, so every reported figure is a latency some request really had."""
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is outside (0, 100]")
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True, slots=True, kw_only=True)
class Distribution:
    """Percentiles of a set of values, in milliseconds."""

    count: int
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, values_ms: Iterable[float]) -> Distribution | None:
        ordered = sorted(values_ms)
        if not ordered:
            return None
        p50, p90, p95, p99 = (percentile(ordered, p) for p in PERCENTILES)
        return cls(
            count=len(ordered),
            p50=p50,
            p90=p90,
            p95=p95,
            p99=p99,
            max=ordered[-1],
            mean=sum(ordered) / len(ordered),
        )


def error_kind(sample: Sample) -> str | None:
    """How a sample failed: its transport error, or `HTTP <status>` outside 200-399; None on success."""
    if sample.error is not None:
        return sample.error
    if not sample.ok:
        return f"HTTP {sample.status}"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSummary:
    requests: int
    ok: int
    errors: int
    error_kinds: dict[str, int]
    achieved_rate: float
    """Requests per second over the span between this group's first and last scheduled send."""
    latency_ms: Distribution | None
    """Over every request that got an HTTP response (any status)."""
    activator_waits: int
    """Responses that carried `Server-Timing: activator;dur=...`."""
    activator_ms: Distribution | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize_group(samples: Sequence[Sample]) -> GroupSummary:
    kinds = Counter(kind for s in samples if (kind := error_kind(s)) is not None)
    answered = [s.latency * 1000 for s in samples if s.status > 0]
    waits = [s.activator_ms for s in samples if s.activator_ms is not None]
    first = min((s.scheduled for s in samples), default=0.0)
    last = max((s.scheduled for s in samples), default=0.0)
    span = last - first
    return GroupSummary(
        requests=len(samples),
        ok=sum(1 for s in samples if s.ok),
        errors=sum(kinds.values()),
        error_kinds=dict(sorted(kinds.items())),
        achieved_rate=(len(samples) - 1) / span if span > 0 else 0.0,
        latency_ms=Distribution.of(answered),
        activator_waits=len(waits),
        activator_ms=Distribution.of(waits),
    )


def summarize(
    samples: Iterable[Sample], key: Callable[[Sample], str] = lambda s: s.target
) -> dict[str, GroupSummary]:
    """One summary per group (by target unless `key` says otherwise), in order of first appearance."""
    groups: dict[str, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(key(sample), []).append(sample)
    return {name: summarize_group(group) for name, group in groups.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class Bucket:
    t: float
    """Start of the bucket, seconds after the run's start (by scheduled send time)."""
    requests: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None


def timeline(samples: Iterable[Sample], width: float = 1.0) -> list[Bucket]:
    """Per-`width`-seconds buckets of request count, errors and latency, by scheduled send time."""
    buckets: dict[int, list[Sample]] = {}
    for sample in samples:
        buckets.setdefault(int(sample.scheduled // width), []).append(sample)
    out = []
    for index in sorted(buckets):
        group = buckets[index]
        ordered = sorted(s.latency * 1000 for s in group if s.status > 0)
        out.append(
            Bucket(
                t=index * width,
                requests=len(group),
                errors=sum(1 for s in group if error_kind(s) is not None),
                p50_ms=percentile(ordered, 50) if ordered else None,
                p95_ms=percentile(ordered, 95) if ordered else None,
                max_ms=ordered[-1] if ordered else None,
            )
        )
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """A figure compared with its bar: passes when `value <= limit` (lower is better for every figure)."""

    name: str
    value: float | None
    limit: float
    unit: str
    knative: str
    """Knative's own bar for the same benchmark, as text (it may differ in load or limit)."""
    digits: int = 1
    """Decimals shown in the report (0 for counts)."""
    gating: bool = True
    """Whether the run's overall verdict depends on it; False for figures shown only beside Knative's bar."""

    @property
    def passed(self) -> bool:
        return self.value is not None and self.value <= self.limit

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}
