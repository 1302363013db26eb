"""The components' platform on Kubernetes: revisions from `Revision` objects, their pods from the
EndpointSlices of each revision's private Service, scale through the Deployment's `scale` subresource, and
the autoscaler's view published in the Revision's status (where the router reads the routing mode).

`KubePlatform` implements `serving.platform.RevisionSource` and `Actuator`, so the activator and the
autoscaler run unchanged with `SERVING_PLATFORM_URL=kubernetes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Final

from serving.kube.api import DEPLOYMENTS, ENDPOINT_SLICES, PODS, REVISIONS, ApiError, Kube
from serving.kube.informer import Informer
from serving.platform import (
    Pod,
    Revision,
    RevisionKey,
    ScalerStatus,
    Snapshot,
    status_from_json,
    status_to_json,
)

log = logging.getLogger(__name__)

QUEUE_PORT: Final = 8012
QUEUE_ADMIN_PORT: Final = 8022
QUEUE_STATS_PORT: Final = 9090
REVISION_LABEL: Final = "serving.knative.dev/revision"
ROUTING_STATE_LABEL: Final = "serving.knative.dev/routingState"
SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
DELETION_COST: Final = "controller.kubernetes.io/pod-deletion-cost"
SCALER_STATUS: Final = "scaler"
"""The field of a Revision's status the autoscaler writes (`ScalerStatus` as JSON)."""


def private_service_name(revision: str) -> str:
    return f"{revision}-private"


def deployment_name(revision: str) -> str:
    return f"{revision}-deployment"


def _int(value: object, default: int) -> int:
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError):
        return default


def _float(value: object, default: float) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def revision_of(obj: Mapping[str, Any], pods: tuple[Pod, ...] = ()) -> Revision:
    """A `Revision` object as the data plane sees it (settings from its spec, annotations)."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    spec = obj.get("spec") or {}
    return Revision(
        key=RevisionKey(str(meta.get("namespace", "")), str(meta.get("name", ""))),
        service=str(labels.get("serving.knative.dev/service", "")),
        configuration=str(labels.get("serving.knative.dev/configuration", "")),
        container_concurrency=_int(spec.get("containerConcurrency"), 0),
        timeout_seconds=_float(spec.get("timeoutSeconds"), 300.0),
        response_start_timeout_seconds=_float(spec.get("responseStartTimeoutSeconds"), 0.0),
        idle_timeout_seconds=_float(spec.get("idleTimeoutSeconds"), 0.0),
        annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
        pods=pods,
        # The controller labels a revision no route references any more `reserve` (Knative's routingState).
        reachable=labels.get(ROUTING_STATE_LABEL) != "reserve",
        protocol=_protocol(spec),
    )


def _protocol(spec: Mapping[str, Any]) -> str:
    """'h2c' when the serving container's port is named h2c (Knative's rule), else 'http1'."""
    for container in spec.get("containers") or ():
        ports = (container or {}).get("ports") or ()
        if ports and (ports[0] or {}).get("name") == "h2c":
            return "h2c"
    return "http1"


def pod_started_at(pod: Mapping[str, Any]) -> float:
    """Unix time a pod started (`status.startTime`, else its creation), 0 when neither reads."""
    for text in (
        (pod.get("status") or {}).get("startTime"),
        (pod.get("metadata") or {}).get("creationTimestamp"),
    ):
        if isinstance(text, str):
            try:
                return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0


def pods_of(
    slices: Sequence[Mapping[str, Any]], started: Callable[[str, str], float] = lambda namespace, name: 0.0
) -> tuple[Pod, ...]:
    """The pods the EndpointSlices of one private Service list, terminating ones left out (as the Endpoints
    API leaves them out, and as the local platform does); `started(namespace, pod)` gives each one's start
    time (unknown: 0).

    A terminating pod must not be listed as merely not ready: not ready means *starting* to the activator,
    which probes such a pod and may have let it in by its own probe before the platform called it ready.
    Such a pod, deleted before it was ever reported ready, made no ready -> not ready transition, so it
    stayed a target and its drain never ended while traffic kept coming."""
    found: dict[str, Pod] = {}
    for slice_ in slices:
        for endpoint in slice_.get("endpoints") or []:
            addresses = endpoint.get("addresses") or []
            if not addresses:
                continue
            ref = endpoint.get("targetRef") or {}
            name = str(ref.get("name") or addresses[0])
            namespace = str((slice_.get("metadata") or {}).get("namespace", ""))
            conditions = endpoint.get("conditions") or {}
            if conditions.get("terminating"):
                continue
            ready = bool(conditions.get("ready"))
            found[name] = Pod(
                name=name,
                host=str(addresses[0]),
                port=QUEUE_PORT,
                stats_port=QUEUE_STATS_PORT,
                admin_port=QUEUE_ADMIN_PORT,
                ready=ready,
                started_at=started(namespace, name),
            )
    return tuple(found[name] for name in sorted(found))


def scaler_status_of(obj: Mapping[str, Any]) -> ScalerStatus | None:
    raw = (obj.get("status") or {}).get(SCALER_STATUS)
    if not isinstance(raw, Mapping):
        return None
    try:
        return status_from_json(raw)
    except (KeyError, TypeError, ValueError):
        return None


class KubeState:
    """Revisions and their pods, kept by informers; what the data plane reads of the cluster.

    Pods come from the EndpointSlices of the revisions' private Services. With `pod_start_times` (the
    autoscaler, whose scraper prefers pods older than the window and whose scale-in keeps older pods), a
    third informer on the revision pods supplies each one's start time.
    """

    def __init__(self, kube: Kube, namespace: str | None = None, *, pod_start_times: bool = False) -> None:
        self.kube = kube
        self.revisions_informer = Informer(kube, REVISIONS, namespace)
        self.slices_informer = Informer(kube, ENDPOINT_SLICES, namespace, label_selector=REVISION_LABEL)
        self.pods_informer = (
            Informer(kube, PODS, namespace, label_selector=REVISION_LABEL) if pod_start_times else None
        )
        self._version = 0
        self._changed = asyncio.Event()

    def _started(self, namespace: str, name: str) -> float:
        if self.pods_informer is None:
            return 0.0
        pod = self.pods_informer.get(namespace, name)
        return pod_started_at(pod) if pod is not None else 0.0

    async def run(self) -> None:
        async def follow(informer: Informer) -> None:
            async for _ in informer.changes():
                self._version += 1
                self._changed.set()

        async with asyncio.TaskGroup() as group:
            group.create_task(self.revisions_informer.run())
            group.create_task(self.slices_informer.run())
            group.create_task(follow(self.revisions_informer))
            group.create_task(follow(self.slices_informer))
            if self.pods_informer is not None:
                group.create_task(self.pods_informer.run())

    async def synced(self) -> None:
        await self.revisions_informer.synced.wait()
        await self.slices_informer.synced.wait()
        if self.pods_informer is not None:
            await self.pods_informer.synced.wait()

    def _slices_by_service(self) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
        found: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for slice_ in self.slices_informer.cache.values():
            meta = slice_.get("metadata") or {}
            service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
            if service:
                found.setdefault((str(meta.get("namespace", "")), str(service)), []).append(slice_)
        return found

    def revisions(self) -> list[Revision]:
        slices = self._slices_by_service()
        found = []
        for (namespace, name), obj in sorted(self.revisions_informer.cache.items()):
            if (obj.get("metadata") or {}).get("deletionTimestamp"):
                continue
            pods = pods_of(slices.get((namespace, private_service_name(name)), []), self._started)
            found.append(revision_of(obj, pods))
        return found

    def revision(self, key: RevisionKey) -> Revision | None:
        obj = self.revisions_informer.get(key.namespace, key.name)
        if obj is None:
            return None
        slices = [
            s
            for s in self.slices_informer.cache.values()
            if (s.get("metadata") or {}).get("namespace") == key.namespace
            and ((s.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
            == private_service_name(key.name)
        ]
        return revision_of(obj, pods_of(slices, self._started))

    def status(self, key: RevisionKey) -> ScalerStatus | None:
        obj = self.revisions_informer.get(key.namespace, key.name)
        return scaler_status_of(obj) if obj is not None else None

    async def changes(self) -> AsyncIterator[int]:
        """The current version once synced, then each newer one (skipping those that passed meanwhile)."""
        await self.synced()
        seen = self._version
        yield seen
        while True:
            self._changed.clear()
            if self._version == seen:
                await self._changed.wait()
            seen = self._version
            yield seen


def peer_position(addresses: Sequence[str], own_ip: str) -> tuple[int, int]:
    """(index, count) of `own_ip` among the ready replicas' addresses (itself counted if not listed yet)."""
    ordered = sorted(set(addresses) | {own_ip})
    return ordered.index(own_ip), len(ordered)


class KubePlatform:
    """`RevisionSource`, `Actuator` and `PeerSource` over the Kubernetes API."""

    def __init__(self, kube: Kube, namespace: str | None = None, *, pod_start_times: bool = False) -> None:
        self.kube = kube
        self.state = KubeState(kube, namespace, pod_start_times=pod_start_times)

    async def watch(self) -> AsyncIterator[Snapshot]:
        runner = asyncio.create_task(self.state.run())
        try:
            async for version in self.state.changes():
                if runner.done():
                    runner.result()
                yield Snapshot(version, tuple(self.state.revisions()))
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def peers(self, namespace: str, service: str, own_ip: str) -> AsyncIterator[tuple[int, int]]:
        informer = Informer(
            self.kube, ENDPOINT_SLICES, namespace, label_selector=f"{SERVICE_NAME_LABEL}={service}"
        )
        runner = asyncio.create_task(informer.run())
        last: tuple[int, int] | None = None
        try:
            async for _ in informer.changes():
                if runner.done():
                    runner.result()
                ready = [p.host for p in pods_of(list(informer.cache.values())) if p.ready]
                position = peer_position(ready, own_ip)
                if position != last:
                    last = position
                    yield position
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def scale(self, key: RevisionKey, replicas: int, remove: list[str]) -> None:
        """Mark the pods to remove first with the lowest deletion cost, then set the Deployment's scale."""
        for pod in remove:
            try:
                await self.kube.merge_patch(
                    PODS, key.namespace, pod, {"metadata": {"annotations": {DELETION_COST: "-1000"}}}
                )
            except ApiError as exc:
                if not exc.not_found:
                    log.warning("marking pod %s for removal failed: %s", pod, exc)
        await self.kube.merge_patch(
            DEPLOYMENTS,
            key.namespace,
            deployment_name(key.name),
            {"spec": {"replicas": replicas}},
            sub="scale",
        )

    async def publish(self, key: RevisionKey, status: ScalerStatus) -> None:
        patch: dict[str, Any] = {"status": {SCALER_STATUS: status_to_json(status)}}
        if status.desired_pods is not None:
            patch["status"]["desiredReplicas"] = status.desired_pods
        try:
            await self.kube.merge_patch(REVISIONS, key.namespace, key.name, patch, sub="status")
        except ApiError as exc:
            if not exc.not_found:
                raise
