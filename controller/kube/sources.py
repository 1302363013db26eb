"""ContainerSources and SinkBindings on Kubernetes (written by the leader after each resolution):

- a ContainerSource runs as a Deployment `{source}-deployment` (one replica, owned by the source, so that
  deleting the source deletes it) whose containers get the source's `K_SINK` and `K_CE_OVERRIDES`, as
  Knative's ContainerSource does;
- a SinkBinding puts `K_SINK` and `K_CE_OVERRIDES` into its subject's pod template: the containers of a
  Deployment, StatefulSet or DaemonSet, of a CronJob's job template (the Jobs it makes from then on get
  them), or a Knative Service's user containers in each of its revisions' Deployments (a change rolls the
  pods, which read the variables when they start, as Knative's binding webhook makes them do).

The binding's variables are written with server-side apply under a field manager of their own
(`BINDING_MANAGER`), so they sit beside whatever owns the rest of the workload: a `kubectl apply` of it does
not drop them, and a workload no SinkBinding names any more (the binding deleted, or its subject changed) is
found by that manager in its `managedFields` and given them back, with nothing else touched, even after a
leader change.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from controller.kube.labels import SERVICE
from controller.kube.resources import QUEUE_PROXY
from controller.reconcile.eventing import Resolved
from serving.events import ContainerSource
from serving.kube.api import (
    CRON_JOBS,
    DAEMON_SETS,
    DEPLOYMENTS,
    JSON,
    STATEFUL_SETS,
    ApiError,
    Kube,
    Resource,
    owner_reference,
)

SOURCE_MANAGER: Final = "serving-containersource"
BINDING_MANAGER: Final = "serving-sinkbinding"
SOURCE_LABEL: Final = "sources.knative.dev/containerSource"
"""On a ContainerSource's Deployment and its pods: the source's name (the Deployment's selector)."""
BINDING_VARIABLES: Final = ("K_SINK", "K_CE_OVERRIDES")
WORKLOADS: Final = {r.kind: r for r in (DEPLOYMENTS, STATEFUL_SETS, DAEMON_SETS, CRON_JOBS)}
"""The kinds whose pod template a SinkBinding writes to (`serving.events.CLUSTER_SUBJECT_REFS`), by kind."""
Workload = tuple[str, str, str]
"""(kind, namespace, name)."""


def source_deployment_name(source: str) -> str:
    return f"{source}-deployment"


def _entries(binding: Mapping[str, str]) -> list[JSON]:
    return [{"name": k, "value": v} for k, v in binding.items()]


def _env(existing: Iterable[Mapping[str, Any]], binding: Mapping[str, str]) -> list[JSON]:
    """A container's env with the binding's variables in place of any it had."""
    return [dict(e) for e in existing if e.get("name") not in BINDING_VARIABLES] + _entries(binding)


def _template_path(kind: str) -> tuple[str, ...]:
    """Where a workload of `kind` keeps its pod template."""
    return ("spec", "jobTemplate", "spec", "template") if kind == CRON_JOBS.kind else ("spec", "template")


def _containers(workload: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    """The containers of the pod template of `workload`, a `kind`."""
    found: Mapping[str, Any] = workload
    for step in _template_path(kind):
        found = found.get(step) or {}
    spec = found.get("spec") or {}
    return list(spec.get("containers") or [])


def source_deployment(
    source_obj: Mapping[str, Any], source: ContainerSource, binding: Mapping[str, str]
) -> JSON:
    """The Deployment that runs `source` (from its API object `source_obj`, for the owner reference)."""
    template = copy.deepcopy(dict(source.template))
    meta = dict(template.get("metadata") or {})
    spec = dict(template.get("spec") or {})
    names = [c.name for c in (source.container, *source.extra_containers)]
    containers = []
    for name, raw in zip(names, spec.get("containers") or [], strict=True):
        container = dict(raw)
        container["name"] = name  # Knative's defaulting: an unnamed container is `<source>-<index>`
        container["env"] = _env(container.get("env") or [], binding)
        containers.append(container)
    spec["containers"] = containers
    labels = {**(meta.get("labels") or {}), SOURCE_LABEL: source.name}
    pod_meta: JSON = {"labels": labels}
    if meta.get("annotations"):
        pod_meta["annotations"] = dict(meta["annotations"])
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": source_deployment_name(source.name),
            "namespace": source.namespace,
            "labels": {SOURCE_LABEL: source.name},
            "ownerReferences": [owner_reference(source_obj)],
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {SOURCE_LABEL: source.name}},
            "template": {"metadata": pod_meta, "spec": spec},
        },
    }


def binding_apply(
    workload: Workload, containers: Iterable[str], binding: Mapping[str, str]
) -> tuple[Resource, JSON]:
    """The server-side apply body that gives `containers` of `workload` the binding's variables, and owns
    nothing else, with its resource. With no containers it owns nothing: applied, it takes the variables
    back."""
    kind, namespace, name = workload
    resource = WORKLOADS[kind]
    body: JSON = {
        "apiVersion": resource.api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
    }
    listed = [{"name": c, "env": _entries(binding)} for c in containers]
    if listed:
        nested: JSON = {"spec": {"containers": listed}}
        for step in reversed(_template_path(kind)[1:]):
            nested = {step: nested}
        body["spec"] = nested
    return resource, body


def bound_by_us(workload: Mapping[str, Any]) -> bool:
    """Whether `workload` carries fields `BINDING_MANAGER` applied."""
    fields = (workload.get("metadata") or {}).get("managedFields") or []
    return any(f.get("manager") == BINDING_MANAGER and f.get("operation") == "Apply" for f in fields)


def current_binding(
    workload: Mapping[str, Any], containers: Iterable[str], kind: str
) -> dict[str, dict[str, str]]:
    """container -> the binding variables it has now, in `workload` (a `kind`)."""
    wanted = set(containers)
    return {
        str(c.get("name")): {
            str(e.get("name")): str(e.get("value", ""))
            for e in c.get("env") or []
            if e.get("name") in BINDING_VARIABLES
        }
        for c in _containers(workload, kind)
        if c.get("name") in wanted
    }


def _container_names(workload: Mapping[str, Any], kind: str) -> list[str]:
    """The containers a binding gives its variables to: every one, but a Knative Service's revision
    Deployment's queue-proxy (whether the Service is the subject or a selector matched the Deployment)."""
    names = [str(c.get("name")) for c in _containers(workload, kind) if c.get("name")]
    revision = SERVICE in ((workload.get("metadata") or {}).get("labels") or {})
    return [n for n in names if not (revision and n == QUEUE_PROXY)]


def _available(deployment: Mapping[str, Any] | None) -> bool:
    return deployment is not None and int((deployment.get("status") or {}).get("availableReplicas") or 0) > 0


REFUSED: Final = frozenset({400, 422})
"""API answers that say the object itself is wrong (an invalid pod template): retrying cannot help."""


@dataclass
class Workloads:
    """Writes the ContainerSources' Deployments and the SinkBindings' variables; `not_ready` holds, after each
    pass, why a ContainerSource is not ready (its Deployment refused, or without an available pod yet)."""

    kube: Kube
    not_ready: dict[tuple[str, str, str], str] = field(default_factory=dict)
    _applied: dict[tuple[str, str], JSON] = field(default_factory=dict)
    """(namespace, Deployment) of each ContainerSource -> the body last applied for it."""

    async def apply(
        self,
        resolved: Resolved,
        sources: Mapping[tuple[str, str], Mapping[str, Any]],
        workloads: Mapping[str, Mapping[tuple[str, str], Mapping[str, Any]]],
    ) -> None:
        """One pass: `sources` are the ContainerSources' API objects by (namespace, name), `workloads` the
        cluster's Deployments, StatefulSets, DaemonSets and CronJobs by kind, then (namespace, name). Raises
        `ApiError` when a write fails for a reason that may pass (the pass is retried)."""
        self.not_ready = {}
        applied: dict[tuple[str, str], JSON] = {}
        deployments = workloads.get(DEPLOYMENTS.kind, {})
        for source, binding in resolved.container_sources:
            source_obj = sources.get((source.namespace, source.name))
            if source_obj is None:
                continue
            key = (source.namespace, source_deployment_name(source.name))
            body = source_deployment(source_obj, source, binding)
            live = deployments.get(key)
            try:
                if self._applied.get(key) != body or live is None:
                    await self.kube.apply(DEPLOYMENTS, body, manager=SOURCE_MANAGER)
            except ApiError as exc:
                if exc.status not in REFUSED:
                    raise
                self.not_ready[source.key] = f"Deployment {key[0]}/{key[1]} refused: {exc.message}"
                continue
            applied[key] = body
            if not _available(live):
                self.not_ready[source.key] = f"Deployment {key[0]}/{key[1]} has no available pod yet"
        self._applied = applied
        wanted = self._bindings(resolved, workloads)
        for kind, objects in workloads.items():
            for (namespace, name), obj in objects.items():
                workload = (kind, namespace, name)
                if workload in wanted:
                    containers, binding = wanted[workload]
                    if current_binding(obj, containers, kind) != {c: dict(binding) for c in containers}:
                        await self._bind(*binding_apply(workload, containers, binding))
                elif bound_by_us(obj):
                    await self._bind(*binding_apply(workload, (), {}))

    async def _bind(self, resource: Resource, body: JSON) -> None:
        try:
            await self.kube.apply(resource, body, manager=BINDING_MANAGER)
        except ApiError as exc:
            # Deleted since the informer saw it: an apply would create it, which the API refuses for want
            # of a template; the next pass sees it gone.
            if not (exc.not_found or exc.status in REFUSED):
                raise

    @staticmethod
    def _bindings(
        resolved: Resolved, workloads: Mapping[str, Mapping[tuple[str, str], Mapping[str, Any]]]
    ) -> dict[Workload, tuple[list[str], dict[str, str]]]:
        """(kind, namespace, name) -> the containers to bind and the variables."""
        wanted: dict[Workload, tuple[list[str], dict[str, str]]] = {}
        for (namespace, name), deployment in workloads.get(DEPLOYMENTS.kind, {}).items():
            labels = (deployment.get("metadata") or {}).get("labels") or {}
            service = labels.get(SERVICE)
            if service is not None and (namespace, service) in resolved.bindings:
                wanted[(DEPLOYMENTS.kind, namespace, name)] = (
                    _container_names(deployment, DEPLOYMENTS.kind),
                    resolved.bindings[(namespace, service)],
                )
        for workload, binding in resolved.workload_bindings.items():
            kind, namespace, name = workload
            subject = workloads.get(kind, {}).get((namespace, name))
            if subject is not None:
                wanted[workload] = (_container_names(subject, kind), binding)
        return wanted
