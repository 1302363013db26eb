"""The platform seam: the one place where the local supervisor and Kubernetes differ.

Components see revisions (with their settings and pod endpoints) through `RevisionSource`, and act on them
through `Actuator` (set a revision's replica count, naming the pods to remove first; publish the autoscaler's
view, including the routing mode). The local platform serves these over a small HTTP API on loopback
(`serving.platformclient` is its client); on Kubernetes `serving.kube.platform` implements the same
protocols from the API server.

Wire format of the local API (JSON, all on one base URL given as `SERVING_PLATFORM_URL`):

- `GET  /v1/revisions` -> a snapshot `{"resourceVersion": int, "revisions": [Revision...]}`.
- `GET  /v1/revisions?watch=true` -> newline-delimited snapshots, the current one first, then one per change;
  the client reconnects (and gets the current snapshot again) whenever the stream drops.
- `POST /v1/revisions/{namespace}/{name}/scale` with `{"replicas": int, "remove": [pod name...]}`.
- `PUT  /v1/revisions/{namespace}/{name}/status` with a `ScalerStatus` as JSON.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Mode = Literal["Serve", "Proxy"]


@dataclass(frozen=True, slots=True, order=True)
class RevisionKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Pod:
    """One pod of a revision, as the data plane reaches it."""

    name: str
    host: str
    """IP address of the pod (127.0.0.1 locally)."""
    port: int
    """Queue-proxy main port (8012 on Kubernetes; a free port locally)."""
    stats_port: int
    """Queue-proxy autoscaler stats port serving protobuf `Stat` (9090 on Kubernetes)."""
    admin_port: int
    """Queue-proxy admin port (8022 on Kubernetes)."""
    ready: bool
    """Whether the platform considers the pod ready (its readiness probe passed)."""
    started_at: float
    """Unix time the pod started; the autoscaler scrapes older pods first."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Revision:
    """An immutable revision and the settings the data plane needs about it."""

    key: RevisionKey
    service: str
    configuration: str
    container_concurrency: int = 0
    """0 means unlimited (Knative default)."""
    timeout_seconds: float = 300.0
    """Total request timeout including queue wait (Knative default 300 s)."""
    response_start_timeout_seconds: float = 0.0
    """0 means the total timeout applies."""
    idle_timeout_seconds: float = 0.0
    """0 means off."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    """The revision template's annotations (`autoscaling.knative.dev/*` among them)."""
    pods: tuple[Pod, ...] = ()
    protocol: str = "http1"
    """What the app speaks: 'http1', or 'h2c' (the container port is named h2c): the router and the activator
    then speak HTTP/2 to the revision's queue-proxies, which speak it to the app."""
    reachable: bool = True
    """False once no route sends it traffic any more (Knative's PodAutoscaler reachability): its min-scale no
    longer holds and it scales down at once. A new revision not routed yet is still reachable."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalerStatus:
    """What the autoscaler last decided for a revision; shown by `serving status`."""

    desired_pods: int | None
    """None while the autoscaler has no data to decide on."""
    mode: Mode
    stable_concurrency: float
    panic_concurrency: float
    panic: bool
    excess_burst_capacity: float
    activators: int
    """Number of activators that should be in the path."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    resource_version: int
    revisions: tuple[Revision, ...]


class RevisionSource(Protocol):
    """Lists and watches revisions with their pods."""

    def watch(self) -> AsyncIterator[Snapshot]:
        """Yield the current snapshot, then one per change, forever (reconnecting as needed)."""
        ...


class Actuator(Protocol):
    """Acts on revisions for the autoscaler."""

    async def scale(self, key: RevisionKey, replicas: int, remove: list[str]) -> None:
        """Set the replica count; when scaling in, remove the pods named in `remove` first."""
        ...

    async def publish(self, key: RevisionKey, status: ScalerStatus) -> None: ...


def pod_to_json(pod: Pod) -> dict[str, Any]:
    return asdict(pod)


def pod_from_json(data: Mapping[str, Any]) -> Pod:
    return Pod(
        name=str(data["name"]),
        host=str(data["host"]),
        port=int(data["port"]),
        stats_port=int(data["stats_port"]),
        admin_port=int(data["admin_port"]),
        ready=bool(data["ready"]),
        started_at=float(data["started_at"]),
    )


def revision_to_json(rev: Revision) -> dict[str, Any]:
    return {
        "namespace": rev.key.namespace,
        "name": rev.key.name,
        "service": rev.service,
        "configuration": rev.configuration,
        "container_concurrency": rev.container_concurrency,
        "timeout_seconds": rev.timeout_seconds,
        "response_start_timeout_seconds": rev.response_start_timeout_seconds,
        "idle_timeout_seconds": rev.idle_timeout_seconds,
        "annotations": dict(rev.annotations),
        "pods": [pod_to_json(p) for p in rev.pods],
        "reachable": rev.reachable,
        "protocol": rev.protocol,
    }


def revision_from_json(data: Mapping[str, Any]) -> Revision:
    return Revision(
        key=RevisionKey(str(data["namespace"]), str(data["name"])),
        service=str(data["service"]),
        configuration=str(data["configuration"]),
        container_concurrency=int(data["container_concurrency"]),
        timeout_seconds=float(data["timeout_seconds"]),
        response_start_timeout_seconds=float(data["response_start_timeout_seconds"]),
        idle_timeout_seconds=float(data["idle_timeout_seconds"]),
        annotations={str(k): str(v) for k, v in data["annotations"].items()},
        pods=tuple(pod_from_json(p) for p in data["pods"]),
        reachable=bool(data.get("reachable", True)),
        protocol="h2c" if data.get("protocol") == "h2c" else "http1",
    )


def snapshot_to_json(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "resourceVersion": snapshot.resource_version,
        "revisions": [revision_to_json(r) for r in snapshot.revisions],
    }


def snapshot_from_json(data: Mapping[str, Any]) -> Snapshot:
    return Snapshot(int(data["resourceVersion"]), tuple(revision_from_json(r) for r in data["revisions"]))


def status_to_json(status: ScalerStatus) -> dict[str, Any]:
    return asdict(status)


def status_from_json(data: Mapping[str, Any]) -> ScalerStatus:
    desired = data["desired_pods"]
    mode = str(data["mode"])
    if mode not in ("Serve", "Proxy"):
        raise ValueError(f"mode must be Serve or Proxy, not {mode!r}")
    return ScalerStatus(
        desired_pods=None if desired is None else int(desired),
        mode="Serve" if mode == "Serve" else "Proxy",
        stable_concurrency=float(data["stable_concurrency"]),
        panic_concurrency=float(data["panic_concurrency"]),
        panic=bool(data["panic"]),
        excess_burst_capacity=float(data["excess_burst_capacity"]),
        activators=int(data["activators"]),
    )


@runtime_checkable
class PeerSource(Protocol):
    """Where a component learns how many replicas of it run and which one it is (Kubernetes: the endpoints
    of its own Service), so that replicas can share work without a static index."""

    def peers(self, namespace: str, service: str, own_ip: str) -> AsyncIterator[tuple[int, int]]:
        """Yields (index, count) now and whenever the ready replicas change."""
        ...


class PlatformClient(RevisionSource, Actuator, Protocol):
    """Both sides of the seam: what the activator and the autoscaler hold."""
