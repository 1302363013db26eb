"""Prometheus gauges of the autoscaler's view of each revision, on an injected registry.

Names follow Knative's autoscaler metrics. The values are read from the autoscaler's state when `/metrics` is
scraped, so a decider tick over a thousand revisions spends nothing on metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from serving.platform import Mode, RevisionKey

_LABELS: Final = ["namespace_name", "revision_name"]


@dataclass(slots=True, kw_only=True)
class RevisionView:
    """What the autoscaler currently knows of one revision."""

    key: RevisionKey
    metric: str
    target: float
    desired: int
    """-1 while unknown."""
    pods: int
    ready: int
    panic: bool
    stable: float | None
    """Latest observed stable-window value of `metric`; None before the first decision."""
    panic_value: float | None
    excess_burst_capacity: int
    activators: int
    mode: Mode


# (name, help, value of a view); None leaves the revision out of that family.
_FAMILIES: Final[tuple[tuple[str, str, Callable[[RevisionView], float | None]], ...]] = (
    (
        "autoscaler_desired_pods",
        "Pods the autoscaler wants for the revision (-1 while unknown)",
        lambda v: v.desired,
    ),
    ("autoscaler_actual_pods", "Pods the platform runs for the revision", lambda v: v.pods),
    ("autoscaler_ready_pods", "Ready pods of the revision", lambda v: v.ready),
    ("autoscaler_panic_mode", "1 while the revision's autoscaler is in panic mode", lambda v: float(v.panic)),
    (
        "autoscaler_stable_request_concurrency",
        "Average concurrency over the stable window",
        lambda v: v.stable if v.metric == "concurrency" else None,
    ),
    (
        "autoscaler_panic_request_concurrency",
        "Average concurrency over the panic window",
        lambda v: v.panic_value if v.metric == "concurrency" else None,
    ),
    (
        "autoscaler_target_concurrency_per_pod",
        "Concurrency per pod the autoscaler aims at",
        lambda v: v.target if v.metric == "concurrency" else None,
    ),
    (
        "autoscaler_stable_requests_per_second",
        "Average requests per second over the stable window",
        lambda v: v.stable if v.metric == "rps" else None,
    ),
    (
        "autoscaler_panic_requests_per_second",
        "Average requests per second over the panic window",
        lambda v: v.panic_value if v.metric == "rps" else None,
    ),
    (
        "autoscaler_target_requests_per_second",
        "Requests per second per pod the autoscaler aims at",
        lambda v: v.target if v.metric == "rps" else None,
    ),
    (
        "autoscaler_excess_burst_capacity",
        "Spare capacity beyond the target burst capacity",
        lambda v: v.excess_burst_capacity,
    ),
    ("autoscaler_activators", "Activators that should be in the revision's path", lambda v: v.activators),
    (
        "autoscaler_serve_mode",
        "1 when the activator is out of the path (Serve), 0 for Proxy",
        lambda v: 1.0 if v.mode == "Serve" else 0.0,
    ),
)


class AutoscalerMetrics(Collector):
    """Registered on `registry`; `views` lists the revisions at collection time."""

    def __init__(self, registry: CollectorRegistry, views: Callable[[], Iterable[RevisionView]]) -> None:
        self._views = views
        registry.register(self)

    def collect(self) -> Iterable[Metric]:
        families = [GaugeMetricFamily(name, text, labels=_LABELS) for name, text, _ in _FAMILIES]
        for view in self._views():
            labels = [view.key.namespace, view.key.name]
            for family, (_, _, value_of) in zip(families, _FAMILIES, strict=True):
                value = value_of(view)
                if value is not None:
                    family.add_metric(labels, value)
        return families
