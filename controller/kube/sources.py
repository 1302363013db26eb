"""ContainerSources and SinkBindings on Kubernetes (written by the leader after each resolution):

- a ContainerSource runs as a Deployment `{source}-deployment` (one replica, owned by the source, so that
  deleting the source deletes it) whose containers get the source's `K_SINK` and `K_CE_OVERRIDES`, as
  Knative's ContainerSource does;
- a SinkBinding puts `K_SINK` and `K_CE_OVERRIDES` into its subject's pod template: a Deployment's
  containers, or a Knative Service's user containers in each of its revisions' Deployments (a change rolls
  the pods, which read the variables when they start, as Knative's binding webhook makes them do).

The binding's variables are written with server-side apply under a field manager of their own
(`BINDING_MANAGER`), so they sit beside whatever owns the rest of the Deployment: a `kubectl apply` of the
Deployment does not drop them, and a Deployment no SinkBinding names any more (the binding deleted, or its
subject changed) is found by that manager in its `managedFields` and given them back, with nothing else
touched, even after a leader change.
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
from serving.kube.api import DEPLOYMENTS, JSON, ApiError, Kube, owner_reference

SOURCE_MANAGER: Final = "serving-containersource"
BINDING_MANAGER: Final = "serving-sinkbinding"
SOURCE_LABEL: Final = "sources.knative.dev/containerSource"
"""On a ContainerSource's Deployment and its pods: the source's name (the Deployment's selector)."""
BINDING_VARIABLES: Final = ("K_SINK", "K_CE_OVERRIDES")


def source_deployment_name(source: str) -> str:
    return f"{source}-deployment"


def _entries(binding: Mapping[str, str]) -> list[JSON]:
    return [{"name": k, "value": v} for k, v in binding.items()]


def _env(existing: Iterable[Mapping[str, Any]], binding: Mapping[str, str]) -> list[JSON]:
    """A container's env with the binding's variables in place of any it had."""
    return [dict(e) for e in existing if e.get("name") not in BINDING_VARIABLES] + _entries(binding)


def _containers(deployment: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The containers of `deployment`'s pod template."""
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
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


def binding_apply(namespace: str, name: str, containers: Iterable[str], binding: Mapping[str, str]) -> JSON:
    """The server-side apply body that gives `containers` of Deployment `name` the binding's variables, and
    owns nothing else. With no containers it owns nothing: applied, it takes the variables back."""
    body: JSON = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
    }
    listed = [{"name": c, "env": _entries(binding)} for c in containers]
    if listed:
        body["spec"] = {"template": {"spec": {"containers": listed}}}
    return body


def bound_by_us(deployment: Mapping[str, Any]) -> bool:
    """Whether `deployment` carries fields `BINDING_MANAGER` applied."""
    fields = (deployment.get("metadata") or {}).get("managedFields") or []
    return any(f.get("manager") == BINDING_MANAGER and f.get("operation") == "Apply" for f in fields)


def current_binding(deployment: Mapping[str, Any], containers: Iterable[str]) -> dict[str, dict[str, str]]:
    """container -> the binding variables it has now."""
    wanted = set(containers)
    return {
        str(c.get("name")): {
            str(e.get("name")): str(e.get("value", ""))
            for e in c.get("env") or []
            if e.get("name") in BINDING_VARIABLES
        }
        for c in _containers(deployment)
        if c.get("name") in wanted
    }


def _container_names(deployment: Mapping[str, Any], *, user_only: bool) -> list[str]:
    names = [str(c.get("name")) for c in _containers(deployment) if c.get("name")]
    return [n for n in names if not (user_only and n == QUEUE_PROXY)]


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
        deployments: Mapping[tuple[str, str], Mapping[str, Any]],
    ) -> None:
        """One pass: `sources` are the ContainerSources' API objects, `deployments` the cluster's
        Deployments, by (namespace, name). Raises `ApiError` when a write fails for a reason that may pass
        (the pass is retried)."""
        self.not_ready = {}
        applied: dict[tuple[str, str], JSON] = {}
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
        wanted = self._bindings(resolved, deployments)
        for key, deployment in deployments.items():
            if key in wanted:
                containers, binding = wanted[key]
                if current_binding(deployment, containers) != {c: dict(binding) for c in containers}:
                    await self._bind(key, binding_apply(*key, containers, binding))
            elif bound_by_us(deployment):
                await self._bind(key, binding_apply(*key, (), {}))

    async def _bind(self, key: tuple[str, str], body: JSON) -> None:
        try:
            await self.kube.apply(DEPLOYMENTS, body, manager=BINDING_MANAGER)
        except ApiError as exc:
            # Deleted since the informer saw it: an apply would create it, which the API refuses for want
            # of a template; the next pass sees it gone.
            if not (exc.not_found or exc.status in REFUSED):
                raise

    @staticmethod
    def _bindings(
        resolved: Resolved, deployments: Mapping[tuple[str, str], Mapping[str, Any]]
    ) -> dict[tuple[str, str], tuple[list[str], dict[str, str]]]:
        """(namespace, Deployment) -> the containers to bind and the variables."""
        wanted: dict[tuple[str, str], tuple[list[str], dict[str, str]]] = {}
        for key, deployment in deployments.items():
            labels = (deployment.get("metadata") or {}).get("labels") or {}
            service = labels.get(SERVICE)
            if service is not None and (key[0], service) in resolved.bindings:
                wanted[key] = (
                    _container_names(deployment, user_only=True),
                    resolved.bindings[(key[0], service)],
                )
        for key, binding in resolved.deployment_bindings.items():
            subject = deployments.get(key)
            if subject is not None:
                wanted[key] = (_container_names(subject, user_only=False), binding)
        return wanted
