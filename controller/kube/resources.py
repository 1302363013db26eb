"""The Kubernetes objects a Service becomes, as pure functions of the Service and a revision.

Names, labels and the pod shape follow Knative: a Revision `{service}-0000N` runs as the Deployment
`{revision}-deployment` whose pods carry the user container (readiness moved to the queue-proxy, a `preStop`
that waits for the queue-proxy to drain) and the `queue-proxy` sidecar with Knative's environment rendered
from the shared contract; a private Kubernetes Service `{revision}-private` selects them, so EndpointSlices
follow their readiness. The Route's ExternalName Service `{service}` gives the Service its in-cluster address
(a DNS alias of the router). Every object is owned by the one above it, so deleting a Service deletes it all.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from controller.kube.labels import (
    CONFIGURATION,
    CONFIGURATION_GENERATION,
    DIGEST,
    REVISION,
    REVISION_UID,
    ROUTE,
    SERVICE,
)
from controller.reconcile.routetable import cluster_local_host
from serving.contract import queueproxy as qp_contract
from serving.contract.controller import ControllerConfig
from serving.contract.probe import probe_token
from serving.contract.tracing import OFF, Tracing
from serving.kube.api import JSON, owner_reference
from serving.kube.platform import (
    QUEUE_ADMIN_PORT,
    QUEUE_PORT,
    QUEUE_STATS_PORT,
    deployment_name,
    private_service_name,
)
from serving.route import RouteTarget
from serving.service import Service
from serving.template import RevisionTemplate

API_VERSION: Final = "serving.knative.dev/v1"
USER_CONTAINER: Final = "user-container"
QUEUE_PROXY: Final = "queue-proxy"
QUEUE_METRICS_PORT: Final = 9091
_REVISION_SPEC_FIELDS: Final = (
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
)


def _labels(service: Service, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    labels = {k: v for k, v in service.labels.items()}
    labels[SERVICE] = service.name
    labels.update(extra or {})
    return labels


def configuration(service: Service, owner: Mapping[str, Any]) -> JSON:
    """The Configuration object of `service` (same name), owned by the Service object."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Configuration",
        "metadata": {
            "name": service.name,
            "namespace": service.namespace,
            "labels": _labels(service),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {"template": copy.deepcopy(dict(service.template.raw))},
    }


def revision(
    service: Service, name: str, generation: int, template: RevisionTemplate, owner: Mapping[str, Any]
) -> JSON:
    """The immutable Revision `name`, owned by the Configuration object."""
    raw = dict(template.raw)
    meta = raw.get("metadata") or {}
    spec = copy.deepcopy(dict(raw.get("spec") or {}))
    spec["containerConcurrency"] = template.container_concurrency
    spec["timeoutSeconds"] = template.timeout_seconds
    return {
        "apiVersion": API_VERSION,
        "kind": "Revision",
        "metadata": {
            "name": name,
            "namespace": service.namespace,
            "labels": {
                **dict(meta.get("labels") or {}),
                SERVICE: service.name,
                CONFIGURATION: service.name,
                CONFIGURATION_GENERATION: str(generation),
            },
            "annotations": {**dict(meta.get("annotations") or {}), DIGEST: template.digest()},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": spec,
    }


def _queue_proxy_env(
    service: Service,
    revision_name: str,
    template: RevisionTemplate,
    drain: float,
    token: str,
    tracing: Tracing = OFF,
) -> list[JSON]:
    container = template.container
    probe = json.dumps(container.readiness_probe, separators=(",", ":")) if container.readiness_probe else ""
    config = qp_contract.Config(
        identity=qp_contract.Identity(
            namespace=service.namespace,
            configuration=service.name,
            revision=revision_name,
            service=service.name,
            pod="$(POD_NAME)",
            pod_ip="$(POD_IP)",
        ),
        proxy=qp_contract.proxy_settings(
            template, user_port=container.port, readiness_probe=probe, probe_token=token
        ),
        ports=qp_contract.Ports(),
        drain=qp_contract.DrainSettings(quiet_period=drain),
        log=qp_contract.LogSettings(log_format="json"),
        tracing=tracing,
    )
    env: list[JSON] = []
    # Tracing off is the contract's default: its variables are left out, so that turning it on or off is
    # the only tracing change that rolls the revisions' pods.
    unset = set() if tracing.enabled else set(OFF.to_env())
    for name, value in config.to_env().items():
        if name in unset:
            continue
        if name == "SERVING_POD":
            env.append({"name": name, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
        elif name == "SERVING_POD_IP":
            env.append({"name": name, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
        else:
            env.append({"name": name, "value": value})
    return env


def _user_container(service: Service, revision_name: str, template: RevisionTemplate) -> JSON:
    spec = template.raw.get("spec") or {}
    written = copy.deepcopy(dict(spec["containers"][template.container.index]))
    port = template.container.port
    written.setdefault("name", USER_CONTAINER)
    written.pop("readinessProbe", None)  # the queue-proxy probes the app; the kubelet probes the queue-proxy
    ports = written.get("ports") or [{}]
    first = dict(ports[0])
    first["containerPort"] = port
    first["name"] = "user-port"
    first.pop("hostPort", None)
    written["ports"] = [first]
    env = [
        e
        for e in written.get("env") or []
        if e.get("name") not in ("PORT", "K_REVISION", "K_CONFIGURATION", "K_SERVICE")
    ]
    env += [
        {"name": "PORT", "value": str(port)},
        {"name": "K_REVISION", "value": revision_name},
        {"name": "K_CONFIGURATION", "value": service.name},
        {"name": "K_SERVICE", "value": service.name},
    ]
    written["env"] = env
    written["lifecycle"] = {
        "preStop": {"httpGet": {"port": QUEUE_ADMIN_PORT, "path": "/wait-for-drain"}},
    }
    written.setdefault("terminationMessagePolicy", "FallbackToLogsOnError")
    return written


def _sidecar_container(service: Service, revision_name: str, template: RevisionTemplate, index: int) -> JSON:
    """A sidecar as written, with the revision's `K_*` variables as Knative gives every container."""
    written = copy.deepcopy(dict((template.raw.get("spec") or {})["containers"][index]))
    env = [
        e
        for e in written.get("env") or []
        if e.get("name") not in ("K_REVISION", "K_CONFIGURATION", "K_SERVICE")
    ]
    env += [
        {"name": "K_REVISION", "value": revision_name},
        {"name": "K_CONFIGURATION", "value": service.name},
        {"name": "K_SERVICE", "value": service.name},
    ]
    written["env"] = env
    return written


def _queue_proxy_container(
    service: Service, revision_name: str, template: RevisionTemplate, config: ControllerConfig
) -> JSON:
    token = probe_token(config.probe_secret, service.namespace, revision_name)
    return {
        "name": QUEUE_PROXY,
        "image": config.queue_sidecar_image,
        "command": ["serving", "queue-proxy"],
        "ports": [
            {"name": "http-queueadm", "containerPort": QUEUE_ADMIN_PORT},
            {"name": "http-autometric", "containerPort": QUEUE_STATS_PORT},
            {"name": "http-usermetric", "containerPort": QUEUE_METRICS_PORT},
            {"name": "queue-port", "containerPort": QUEUE_PORT},
        ],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            *_queue_proxy_env(service, revision_name, template, config.drain_seconds, token, config.tracing),
        ],
        "readinessProbe": {
            "httpGet": {
                "port": QUEUE_PORT,
                "path": "/",
                "httpHeaders": [
                    {"name": "K-Network-Probe", "value": "queue"},
                    *([{"name": "K-Network-Probe-Token", "value": token}] if token else []),
                ],
            },
            "periodSeconds": 1,
            "failureThreshold": 3,
            "successThreshold": 1,
            "timeoutSeconds": 1,
        },
        "resources": {"requests": {"cpu": config.queue_sidecar_cpu, "memory": config.queue_sidecar_memory}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def pod_labels(service: Service, revision_name: str, revision_uid: str) -> dict[str, str]:
    return _labels(
        service,
        {
            CONFIGURATION: service.name,
            REVISION: revision_name,
            REVISION_UID: revision_uid,
            "app": revision_name,
        },
    )


def deployment(
    service: Service,
    revision_obj: Mapping[str, Any],
    template: RevisionTemplate,
    replicas: int,
    config: ControllerConfig,
) -> JSON:
    """The Deployment that runs `revision_obj`'s pods, owned by it."""
    name = str(revision_obj["metadata"]["name"])
    uid = str(revision_obj["metadata"]["uid"])
    spec = {
        k: copy.deepcopy(v)
        for k, v in (template.raw.get("spec") or {}).items()
        if k not in _REVISION_SPEC_FIELDS
    }
    spec["containers"] = [
        _user_container(service, name, template),
        *(_sidecar_container(service, name, template, each.index) for each in template.sidecars),
        _queue_proxy_container(service, name, template, config),
    ]
    spec["terminationGracePeriodSeconds"] = int(template.timeout_seconds + config.drain_seconds)
    spec.setdefault("enableServiceLinks", False)
    labels = pod_labels(service, name, uid)
    annotations = dict(template.annotations)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(name),
            "namespace": service.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(revision_obj)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {REVISION_UID: uid}},
            "progressDeadlineSeconds": 600,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec},
        },
    }


def private_service(service: Service, revision_obj: Mapping[str, Any]) -> JSON:
    """The revision's private Service: its EndpointSlices list the pods and their readiness."""
    name = str(revision_obj["metadata"]["name"])
    uid = str(revision_obj["metadata"]["uid"])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": private_service_name(name),
            "namespace": service.namespace,
            "labels": _labels(service, {CONFIGURATION: service.name, REVISION: name}),
            "ownerReferences": [owner_reference(revision_obj)],
        },
        "spec": {
            "selector": {REVISION_UID: uid},
            "ports": [
                {"name": "http", "port": 80, "targetPort": QUEUE_PORT},
                {"name": "http-queueadm", "port": QUEUE_ADMIN_PORT, "targetPort": QUEUE_ADMIN_PORT},
                {"name": "http-autometric", "port": QUEUE_STATS_PORT, "targetPort": QUEUE_STATS_PORT},
            ],
            "publishNotReadyAddresses": False,
        },
    }


def route(service: Service, owner: Mapping[str, Any]) -> JSON:
    """The Route object of `service` (same name): its spec is the Service's traffic block."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Route",
        "metadata": {
            "name": service.name,
            "namespace": service.namespace,
            "labels": _labels(service, {ROUTE: service.name}),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {"traffic": service_spec_traffic(service)},
    }


def cluster_local_service(service: Service, route_obj: Mapping[str, Any], config: ControllerConfig) -> JSON:
    """The core Service `{service}` that makes `{service}.{namespace}.svc.{cluster domain}` resolve: an
    ExternalName alias of the router's Service, which answers that Host (Knative's placeholder Service, with
    the router as the cluster-local ingress). Owned by the Route, so it goes with it."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service.name,
            "namespace": service.namespace,
            "labels": _labels(service, {ROUTE: service.name}),
            "ownerReferences": [owner_reference(route_obj)],
        },
        "spec": {
            "type": "ExternalName",
            "externalName": cluster_local_host(
                config.router_service, config.system_namespace, config.cluster_domain
            ),
            "sessionAffinity": "None",
            "ports": [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}],
        },
    }


def controlled_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    """Whether `owner` is `obj`'s controller (its owner reference marked `controller`, matched by uid)."""
    uid = (owner.get("metadata") or {}).get("uid")
    return bool(uid) and any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
    )


def service_spec_traffic(service: Service) -> list[JSON]:
    found: list[JSON] = []
    for target in service.traffic:
        entry: JSON = {"percent": target.percent or 0}
        if target.tracks_latest:
            entry["latestRevision"] = True
            entry["configurationName"] = service.name
        else:
            entry["revisionName"] = target.revision_name
            entry["latestRevision"] = False
        if target.tag:
            entry["tag"] = target.tag
        found.append(entry)
    return found


def traffic_status(service: Service, targets: Sequence[RouteTarget], urls: Mapping[str, str]) -> list[JSON]:
    """`status.traffic` as Knative writes it: one entry per `spec.traffic` entry, with its resolved revision
    (`latestRevision` says whether the entry follows the latest ready revision)."""
    found: list[JSON] = []
    for written, target in zip(service.traffic, targets, strict=False):
        entry: JSON = {
            "revisionName": target.revision,
            "percent": target.percent,
            "latestRevision": written.tracks_latest,
        }
        if target.tag:
            entry["tag"] = target.tag
            if target.tag in urls:
                entry["url"] = urls[target.tag]
        found.append(entry)
    return found
