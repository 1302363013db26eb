"""The revision template (`spec.template` of a Service): what each Revision snapshots.

Holds the revision-level settings (concurrency, timeouts, annotations) and the user container, with Knative's
defaults applied, and a digest so that an unchanged template makes no new revision.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from serving.autoscaling import DEFAULT, AutoscalerConfig, validate_annotations
from serving.container import Container, parse_container
from serving.validation import (
    FieldReader,
    dns1035_label_problem,
    join,
    label_value_problem,
)
from serving.volume import check_volumes

DEFAULT_TIMEOUT_SECONDS: Final = 300
"""Knative's revision-timeout-seconds default; also used when `timeoutSeconds` is 0."""
MAX_TIMEOUT_SECONDS: Final = 600
"""Knative's max-revision-timeout-seconds default."""
MAX_CONTAINER_CONCURRENCY: Final = 1000
"""Knative's container-concurrency-max-limit default."""

_REVISION_FIELDS: Final = (
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
)
_POD_FIELDS: Final = frozenset(
    {
        "containers",
        "serviceAccountName",
        "imagePullSecrets",
        "enableServiceLinks",
        "automountServiceAccountToken",
        "volumes",
        *_REVISION_FIELDS,
    }
)
# Pod fields Knative accepts only when an operator turns on a feature flag (all off by default).
_FLAGGED_POD_FIELDS: Final = {
    "affinity": "kubernetes.podspec-affinity",
    "topologySpreadConstraints": "kubernetes.podspec-topologyspreadconstraints",
    "hostAliases": "kubernetes.podspec-hostaliases",
    "nodeSelector": "kubernetes.podspec-nodeselector",
    "runtimeClassName": "kubernetes.podspec-runtimeclassname",
    "tolerations": "kubernetes.podspec-tolerations",
    "securityContext": "kubernetes.podspec-securitycontext",
    "shareProcessNamespace": "kubernetes.podspec-shareprocessnamespace",
    "priorityClassName": "kubernetes.podspec-priorityclassname",
    "schedulerName": "kubernetes.podspec-schedulername",
    "initContainers": "kubernetes.podspec-init-containers",
    "dnsPolicy": "kubernetes.podspec-dnspolicy",
    "dnsConfig": "kubernetes.podspec-dnsconfig",
    "hostIPC": "kubernetes.podspec-hostipc",
    "hostPID": "kubernetes.podspec-hostpid",
    "hostNetwork": "kubernetes.podspec-hostnetwork",
}
_MANAGED_POD_FIELDS: Final = (
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "nodeName",
    "hostname",
    "subdomain",
    "priority",
    "readinessGates",
)
_POD_DISALLOWED: Final = {
    **{
        k: f"not allowed: needs Knative's feature flag {flag} (off by default)"
        for k, flag in _FLAGGED_POD_FIELDS.items()
    },
    **{k: "not allowed: Knative manages this pod field" for k in _MANAGED_POD_FIELDS},
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RevisionTemplate:
    name: str | None
    """`spec.template.metadata.name` (a revision name chosen by the user), else None: generated."""
    annotations: Mapping[str, str]
    labels: Mapping[str, str]
    container_concurrency: int
    """0 = unlimited (Knative default)."""
    timeout_seconds: int
    """Total request timeout; 300 when absent or 0 (Knative default)."""
    response_start_timeout_seconds: int | None
    idle_timeout_seconds: int | None
    container: Container
    """The serving container: the only one, or the one with `ports` among several."""
    sidecars: tuple[Container, ...] = ()
    """The other containers of a multi-container revision, in their order."""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """The template as written (JSON-able): the digest covers fields the local platform ignores too."""

    def digest(self) -> str:
        """Stable hash of the template: equal templates make no new revision (as Knative's generation)."""
        spec = self.raw.get("spec") if isinstance(self.raw, Mapping) else None
        rest = {k: v for k, v in (spec or {}).items() if k not in _REVISION_FIELDS}
        normalized = {
            "name": self.name,
            "annotations": dict(self.annotations),
            "labels": dict(self.labels),
            "containerConcurrency": self.container_concurrency,
            "timeoutSeconds": self.timeout_seconds,
            "responseStartTimeoutSeconds": self.response_start_timeout_seconds,
            "idleTimeoutSeconds": self.idle_timeout_seconds,
            "spec": rest,
        }
        data = json.dumps(normalized, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return hashlib.sha256(data.encode()).hexdigest()


def parse_template(
    r: FieldReader,
    raw: object,
    path: str,
    service_name: str | None,
    config: AutoscalerConfig = DEFAULT,
) -> RevisionTemplate | None:
    """Read `spec.template`; None when any problem was recorded (all of them are)."""
    before = len(r.problems)
    obj = r.mapping(raw, path)
    if obj is None:
        return None
    r.fields(obj, path, {"metadata", "spec"})
    meta_path = join(path, "metadata")
    meta = r.mapping(obj.get("metadata"), meta_path) or {}
    r.fields(meta, meta_path, {"name", "annotations", "labels"})
    name = r.string(meta, "name", meta_path)
    if name is not None:
        _check_revision_name(r, join(meta_path, "name"), name, service_name)
    annotations = r.string_map(meta, "annotations", meta_path)
    labels = r.string_map(meta, "labels", meta_path, label_value_problem)

    spec_path = join(path, "spec")
    spec = r.mapping(obj.get("spec"), spec_path) or {}
    r.fields(spec, spec_path, _POD_FIELDS, _POD_DISALLOWED)
    concurrency = r.integer(
        spec, "containerConcurrency", spec_path, 0, MAX_CONTAINER_CONCURRENCY, why="Knative's default limit"
    )
    timeout = r.integer(
        spec, "timeoutSeconds", spec_path, 0, MAX_TIMEOUT_SECONDS, why="Knative's default maximum"
    )
    timeout = timeout or DEFAULT_TIMEOUT_SECONDS
    start = _bounded_timeout(r, spec, "responseStartTimeoutSeconds", spec_path, timeout)
    idle = _bounded_timeout(r, spec, "idleTimeoutSeconds", spec_path, timeout)
    check_volumes(r, spec, spec_path)
    containers = _parse_containers(r, spec, spec_path)
    for problem in validate_annotations(annotations, concurrency or 0, config):
        r.add(join(meta_path, "annotations"), problem)
    if len(r.problems) > before or containers is None:
        return None
    container, sidecars = containers
    return RevisionTemplate(
        name=name,
        annotations=annotations,
        labels=labels,
        container_concurrency=concurrency or 0,
        timeout_seconds=timeout,
        response_start_timeout_seconds=start,
        idle_timeout_seconds=idle,
        container=container,
        sidecars=sidecars,
        raw=dict(obj),
    )


def _parse_containers(
    r: FieldReader, spec: Mapping[str, Any], path: str
) -> tuple[Container, tuple[Container, ...]] | None:
    """The serving container and the sidecars. With several containers (Knative's multi-container
    revisions), exactly one names `ports`: it serves; names must be unique."""
    containers = r.sequence(spec.get("containers"), join(path, "containers"))
    if containers is None:
        return None
    if not containers:
        r.add(join(path, "containers"), "required: at least one container")
        return None
    serving = 0
    if len(containers) > 1:
        with_ports = [i for i, c in enumerate(containers) if isinstance(c, Mapping) and c.get("ports")]
        if len(with_ports) != 1:
            r.add(
                join(path, "containers"),
                f"{len(containers)} containers: exactly one must name its `ports` (the one that serves); "
                f"{len(with_ports)} do",
            )
            return None
        serving = with_ports[0]
        names: dict[str, int] = {}
        for i, c in enumerate(containers):
            name = c.get("name") if isinstance(c, Mapping) else None
            if not isinstance(name, str):
                r.add(f"{path}.containers[{i}].name", "required when a revision has several containers")
            elif name in names:
                r.add(
                    f"{path}.containers[{i}].name",
                    f"{name!r} is already the name of containers[{names[name]}]",
                )
            else:
                names[name] = i
    parsed = [
        parse_container(r, raw, f"{path}.containers[{i}]", index=i, sidecar=i != serving)
        for i, raw in enumerate(containers)
    ]
    main = parsed[serving]
    sidecars = [c for i, c in enumerate(parsed) if i != serving]
    if main is None or any(c is None for c in sidecars):
        return None
    return main, tuple(c for c in sidecars if c is not None)


def _check_revision_name(r: FieldReader, path: str, name: str, service_name: str | None) -> None:
    problem = dns1035_label_problem(name)
    if problem:
        r.add(path, problem)
    elif service_name is not None and not name.startswith(f"{service_name}-"):
        r.add(path, f"{name!r} must start with the Service name: {service_name}-")


def _bounded_timeout(
    r: FieldReader, spec: Mapping[str, Any], key: str, path: str, timeout: int
) -> int | None:
    value = r.integer(spec, key, path, 0, MAX_TIMEOUT_SECONDS, why="Knative's default maximum")
    if value is not None and value > timeout:
        r.add(join(path, key), f"{value} is longer than timeoutSeconds ({timeout}): it could never apply")
        return None
    return value


def local_template_problems(
    template: RevisionTemplate, base_dir: Path, *, container: bool = False
) -> list[tuple[str, str]]:
    """(field path, rule) for what the local platform cannot run although Knative accepts it; `container`:
    the user container runs from its image in a container runtime (else its `command` runs as a process)."""
    out: list[tuple[str, str]] = []
    spec = template.raw.get("spec") or {}
    path = "spec.template.spec"
    container_path = f"{path}.containers[{template.container.index}]"
    if not container and template.sidecars:
        out.append(
            (
                f"{path}.containers",
                "several containers need a container runtime: they share one network namespace (a podman "
                "pod); remove the serving container's `command` to run every container from its image",
            )
        )
    for sidecar in template.sidecars:
        if sidecar.image is None:
            out.append(
                (
                    f"{path}.containers[{sidecar.index}].image",
                    "required locally: a sidecar runs from its image",
                )
            )
    if not container and not template.container.command:
        why = (
            "`serving up --runtime process` runs every container as a process"
            if template.container.image
            else "a container without an `image` runs as a process"
        )
        out.append(
            (
                f"{container_path}.command",
                f"required locally: {why}; add a `command`, or run the image with a container runtime "
                "(podman or docker)",
            )
        )
    if not container and spec.get("volumes"):
        out.append(
            (
                f"{path}.volumes",
                "volumes need a container runtime: a container that runs as a process has none; remove its "
                "`command` to run its image with podman or docker",
            )
        )
    for i, volume in enumerate(spec.get("volumes") or ()):
        for j, source in enumerate(((volume or {}).get("projected") or {}).get("sources") or ()):
            for kind in set(source or {}) - {"configMap", "secret"}:
                out.append(
                    (
                        f"{path}.volumes[{i}].projected.sources[{j}].{kind}",
                        "not supported locally: projected volumes take configMap and secret sources here",
                    )
                )
    probe = template.container.readiness_probe or {}
    if "exec" in probe:
        out.append(
            (
                f"{container_path}.readinessProbe.exec",
                "not supported locally: the queue-proxy probes with httpGet, tcpSocket or grpc",
            )
        )
    working_dir = template.container.working_dir
    if not container and working_dir is not None and not (base_dir / working_dir).is_dir():
        out.append((f"{container_path}.workingDir", f"{base_dir / working_dir} is not a directory"))
    return out
