"""The state of a running `serving up` as one JSON document: what `serving status` and the live view show.

Per Service its URL and per revision: traffic percent, desired/actual/ready pods, mode (Serve/Proxy),
the autoscaler's observed stable and panic concurrency, requests per second and queued requests, and why
pods are not ready (CrashLoopBackOff, an app not listening on its port, a failing readiness probe, a pod
replacement held back). Mode is Proxy until the autoscaler has published one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.ingress.router import Router
from controller.local.runtime.pod import LocalPod
from controller.local.runtime.supervisor import Supervisor
from controller.local.store import Store
from controller.reconcile.reconciler import Reconciler, ServiceState
from controller.reconcile.routetable import service_host, tag_host, url
from serving.platform import RevisionKey

JSON = dict[str, Any]


@dataclass(slots=True)
class RateMeter:
    """Requests per second per revision from the router's counters, sampled about once a second."""

    rates: dict[RevisionKey, float] = field(default_factory=dict)
    _last: dict[RevisionKey, int] = field(default_factory=dict)
    _at: float = 0.0

    def sample(self, counts: Mapping[RevisionKey, int], now: float) -> None:
        elapsed = now - self._at
        if self._at and elapsed > 0:
            self.rates = {k: (n - self._last.get(k, 0)) / elapsed for k, n in counts.items()}
        self._last = dict(counts)
        self._at = now


class StatusReport:
    """Builds the status document from the live parts of the controller."""

    def __init__(
        self,
        *,
        reconciler: Reconciler,
        supervisor: Supervisor,
        store: Store,
        router: Router,
        ingress_port: int,
        queued: Callable[[RevisionKey], int | None],
        components: Callable[[], JSON],
    ) -> None:
        self._reconciler = reconciler
        self._supervisor = supervisor
        self._store = store
        self._router = router
        self._port = ingress_port
        self._queued = queued
        self._components = components
        self.meter = RateMeter()

    def sample(self) -> None:
        self.meter.sample({k: t.requests for k, t in self._router.traffic.items()}, time.monotonic())

    def build(self) -> JSON:
        return {
            "ingress": f"http://127.0.0.1:{self._port}",
            "services": [self._service(s) for s in self._reconciler.services],
            "components": self._components(),
        }

    def service(self, namespace: str, name: str) -> JSON | None:
        """The status of one Service (as in `build`), None when the reconciler does not know it."""
        state = next((s for s in self._reconciler.services if s.service.key == (namespace, name)), None)
        return None if state is None else self._service(state)

    def _service(self, state: ServiceState) -> JSON:
        service = state.service
        percents: dict[str, int] = {}
        tags: dict[str, list[str]] = {}
        for target in state.targets:
            percents[target.revision] = percents.get(target.revision, 0) + target.percent
            if target.tag:
                tags.setdefault(target.revision, []).append(target.tag)
        revisions = [
            self._revision(state, key, percents.get(key.name, 0), tags.get(key.name, []))
            for key in reversed(state.revision_keys())
        ]
        return {
            "namespace": service.namespace,
            "name": service.name,
            "url": url(service_host(service.name, service.namespace), self._port),
            "file": str(service.source),
            "latest_created_revision": state.configuration.latest,
            "latest_ready_revision": state.latest_ready,
            "revisions": revisions,
        }

    def _revision(self, state: ServiceState, key: RevisionKey, percent: int, tags: list[str]) -> JSON:
        service = state.service
        pods = self._supervisor.pods(key)
        status = self._store.status(key)
        traffic = self._router.traffic.get(key)
        live = [p for p in pods if not p.terminating]
        now = time.monotonic()
        pod_rows = [
            {
                "name": p.name,
                "ready": p.ready,
                "state": _state(p),
                "restarts": p.restarts,
                "reason": p.reason(now),
                "last_exit": p.last_exit,
            }
            for p in pods
        ]
        reasons = [row["reason"] for row in pod_rows if row["reason"]]
        reasons += self._supervisor.reasons(key, now)
        return {
            "name": key.name,
            "traffic_percent": percent,
            "tags": tags,
            "tag_urls": [url(tag_host(t, service.name, service.namespace), self._port) for t in tags],
            "ready": key.name in state.ready,
            "desired_pods": self._supervisor.desired(key),
            "actual_pods": len(live),
            "ready_pods": sum(1 for p in live if p.ready),
            "terminating_pods": len(pods) - len(live),
            "mode": status.mode if status is not None else "Proxy",
            "stable_concurrency": status.stable_concurrency if status is not None else None,
            "panic_concurrency": status.panic_concurrency if status is not None else None,
            "panic": status.panic if status is not None else False,
            "autoscaler_desired_pods": status.desired_pods if status is not None else None,
            "requests_per_second": round(self.meter.rates.get(key, 0.0), 2),
            "requests_total": traffic.requests if traffic is not None else 0,
            "requests_in_flight": traffic.in_flight if traffic is not None else 0,
            "queued": self._queued(key),
            "reason": reasons[0] if reasons else None,
            "reasons": reasons,
            "pods": pod_rows,
        }


def _state(pod: LocalPod) -> str:
    """`Running`, `Terminating`, or why the user container waits (`CrashLoopBackOff`, `ImagePullBackOff`,
    `CreateContainerConfigError`)."""
    if pod.terminating:
        return "Terminating"
    return pod.waiting.split(":")[0] if pod.waiting else "Running"
