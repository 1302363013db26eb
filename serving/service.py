"""The Knative Service model: `serving.knative.dev/v1` Service documents parsed and validated from YAML.

Validation follows Knative's admission webhook (and the Kubernetes schema behind it), so a file accepted
here is accepted by a cluster; every problem in every file is reported at once, and nothing runs while any
remains. Core `v1` ConfigMap and Secret documents may sit next to the Services (`serving.configdata`), for
their containers' environment, and so may Knative Eventing's Brokers, Triggers and sources (`serving.events`).
Checks that only the local platform needs live in `local_problems`, so the Kubernetes path can skip them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from serving import configdata, document, events
from serving.autoscaling import DEFAULT, AutoscalerConfig
from serving.configdata import META_FIELDS, ConfigData, parse_config_data
from serving.container import Container
from serving.duration import DurationError, parse_duration_nanos
from serving.events import EventObject, event_object
from serving.template import RevisionTemplate, local_template_problems, parse_template
from serving.traffic import TrafficTarget, parse_traffic
from serving.validation import (
    DNS_LABEL_MAX,
    FieldReader,
    dns1035_label_problem,
    dns1123_label_problem,
    join,
    label_value_problem,
)

API_VERSION: Final = "serving.knative.dev/v1"
KIND: Final = "Service"
DEFAULT_NAMESPACE: Final = "default"
REVISION_SUFFIX_LEN: Final = len("-00001")
"""Generated revision names append a 5-digit generation to the Service name (Knative's naming)."""
NAME_MAX: Final = DNS_LABEL_MAX - REVISION_SUFFIX_LEN
"""A Service name leaves room for `-00001` so every revision name is a DNS label."""
AUTOSCALING_PREFIX: Final = "autoscaling.knative.dev/"
ROLLOUT_DURATION: Final = "serving.knative.dev/rollout-duration"
SUPPORTED_KINDS: Final = f"{API_VERSION} Service, v1 ConfigMap and Secret, {events.SUPPORTED_KINDS}"
"""What a file may hold, for messages."""


class ServiceFileError(ValueError):
    """One or more Service files are invalid; `problems` lists every problem, each naming file and field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid Service files:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    name: str
    namespace: str
    """`default` when the document names none (kubectl's default namespace)."""
    annotations: Mapping[str, str]
    labels: Mapping[str, str]
    template: RevisionTemplate
    traffic: tuple[TrafficTarget, ...]
    """As written, or 100 % to the latest revision when there is no `spec.traffic` (Knative default)."""
    source: Path
    """The YAML file the Service came from."""
    base_dir: Path
    """The YAML file's folder: the local platform resolves `workingDir` against it."""
    document: int = 1
    """1-based index of the document in `source`, for messages."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def where(self) -> str:
        """Message prefix naming the file and the document."""
        return f"{self.source}: document {self.document} ({KIND}/{self.name})"


@dataclass(frozen=True, slots=True)
class Manifests:
    """Everything a set of files defines: Services, the ConfigMaps and Secrets their containers read, and
    Eventing objects (Brokers, Triggers, sources)."""

    services: list[Service]
    configs: list[ConfigData]
    events: list[EventObject] = field(default_factory=list)
    """In file order; `serving.events.brokers(manifests)` and the like pick one kind."""


def _yaml_documents(text: str, source: Path, problems: list[str]) -> list[object] | None:
    try:
        return document.parse(text, source)
    except document.DocumentError as exc:
        problems.append(exc.problem)
    return None


def _parse_text(text: str, source: Path, problems: list[str], config: AutoscalerConfig) -> Manifests:
    manifests = Manifests([], [])
    docs = _yaml_documents(text, source, problems)
    if docs is None:
        return manifests
    found = False
    for index, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        found = True
        if isinstance(doc, Mapping) and doc.get("kind") in configdata.KINDS:
            data = parse_config_data(doc, source, index, problems)
            if data is not None:
                manifests.configs.append(data)
            continue
        if isinstance(doc, Mapping) and doc.get("kind") in events.KINDS:
            obj = event_object(doc, source, index, problems)
            if obj is not None:
                manifests.events.append(obj)
            continue
        service = _parse_document(doc, source, index, problems, config)
        if service is not None:
            manifests.services.append(service)
    if not found:
        problems.append(f"{source}: no Service, ConfigMap, Secret or Eventing documents in this file")
    return manifests


def _parse_document(
    doc: object, source: Path, index: int, problems: list[str], config: AutoscalerConfig
) -> Service | None:
    if not isinstance(doc, Mapping):
        problems.append(
            f"{source}: document {index}: must be a mapping (a Kubernetes object), not {doc!r:.40}"
        )
        return None
    kind = doc.get("kind")
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    label = f"{kind if isinstance(kind, str) else '?'}/{name if isinstance(name, str) else '?'}"
    r = FieldReader(f"{source}: document {index} ({label})", problems)
    before = len(problems)
    if kind is None:
        r.add("kind", f"required: this file should hold {SUPPORTED_KINDS} documents")
        return None
    if kind != KIND:
        r.add("kind", f"{kind!r} is not supported: a file may hold {SUPPORTED_KINDS} documents")
        return None
    api_version = doc.get("apiVersion")
    if api_version != API_VERSION:
        r.add("apiVersion", f"must be {API_VERSION!r}, not {api_version!r}")
    r.fields(doc, "", {"apiVersion", "kind", "metadata", "spec", "status"})
    svc_name, namespace, annotations, labels = _parse_metadata(r, meta)
    spec = r.mapping(doc.get("spec"), "spec")
    if spec is None:
        return None
    r.fields(spec, "spec", {"template", "traffic"})
    template = None
    if "template" not in spec:
        r.add("spec.template", "required: a Service needs a revision template with one container")
    else:
        template = parse_template(r, spec["template"], "spec.template", svc_name, config)
    traffic = parse_traffic(r, spec.get("traffic"), svc_name)
    if len(problems) > before or template is None or svc_name is None:
        return None
    return Service(
        name=svc_name,
        namespace=namespace,
        annotations=annotations,
        labels=labels,
        template=template,
        traffic=traffic,
        source=source,
        base_dir=source.parent,
        document=index,
    )


def _parse_metadata(r: FieldReader, raw: object) -> tuple[str | None, str, dict[str, str], dict[str, str]]:
    """The Service's name, namespace, annotations and labels."""
    meta = r.mapping(raw, "metadata") or {}
    r.fields(meta, "metadata", META_FIELDS, {"generateName": "not supported: give the Service a `name`"})
    name = r.string(meta, "name", "metadata", required=True)
    r.check("metadata.name", name, _service_name_problem)
    namespace = r.string(meta, "namespace", "metadata") or DEFAULT_NAMESPACE
    r.check("metadata.namespace", namespace, dns1123_label_problem)
    annotations = r.string_map(meta, "annotations", "metadata")
    labels = r.string_map(meta, "labels", "metadata", label_value_problem)
    for key, value in annotations.items():
        path = join("metadata.annotations", key)
        if key.startswith(AUTOSCALING_PREFIX):
            r.add(path, "autoscaling annotations belong in spec.template.metadata.annotations (Knative rule)")
        elif key == ROLLOUT_DURATION:
            r.check(path, value, _rollout_duration_problem)
    return name, namespace, annotations, labels


def _service_name_problem(name: str) -> str | None:
    problem = dns1035_label_problem(name)
    if problem:
        return problem
    if len(name) > NAME_MAX:
        return (
            f"{name!r} is longer than {NAME_MAX} characters: revision names `{name[:8]}...-00001` must fit "
            "in a 63-character DNS label"
        )
    return None


def _rollout_duration_problem(value: str) -> str | None:
    """Knative parses rollout-duration as a Go duration at whole-second precision, and refuses negatives."""
    try:
        nanos = parse_duration_nanos(value)
    except DurationError as exc:
        return str(exc)
    if nanos % 1_000_000_000:
        return f"{value!r} is not at second precision"
    if nanos < 0:
        return f"{value!r} must be positive"
    return None


def duplicate_problems(manifests: Manifests) -> list[str]:
    """An object (kind, namespace and name) defined twice, in one file or in two."""
    first: dict[tuple[str, str, str], Service | ConfigData | EventObject] = {}
    problems: list[str] = []
    objects: list[Service | ConfigData | EventObject] = [
        *manifests.services,
        *manifests.configs,
        *manifests.events,
    ]
    for obj in objects:
        kind = KIND if isinstance(obj, Service) else obj.kind
        key = (kind, obj.namespace, obj.name)
        seen = first.get(key)
        if seen is None:
            first[key] = obj
            continue
        problems.append(
            f"{obj.where}: metadata.name: {kind} {obj.namespace}/{obj.name} is already defined "
            f"in {seen.source} document {seen.document}"
        )
    return problems


def parse_documents(text: str, source: Path, config: AutoscalerConfig = DEFAULT) -> list[Service]:
    """Parse every Service in a YAML stream; raise `ServiceFileError` listing every problem (of its ConfigMaps
    and Secrets too, which are checked but not returned: see `load_manifests`)."""
    problems: list[str] = []
    manifests = _parse_text(text, source, problems, config)
    problems += duplicate_problems(manifests)
    if problems:
        raise ServiceFileError(problems)
    return manifests.services


def parse_object(obj: Mapping[str, Any], config: AutoscalerConfig = DEFAULT) -> Service:
    """Parse a Service object read from the Kubernetes API; raise `ServiceFileError` listing every problem,
    each prefixed with `Service namespace/name`."""
    problems: list[str] = []
    meta = obj.get("metadata")
    namespace = meta.get("namespace", DEFAULT_NAMESPACE) if isinstance(meta, Mapping) else DEFAULT_NAMESPACE
    name = meta.get("name", "?") if isinstance(meta, Mapping) else "?"
    where = f"Service {namespace}/{name}"
    service = _parse_document(obj, Path(where), 1, problems, config)
    if problems or service is None:
        raise ServiceFileError([object_problem(p, where) for p in problems] or [f"{where}: not a Service"])
    return service


def object_problem(problem: str, where: str) -> str:
    """A problem of a Service read from the API, prefixed `Service ns/name:` rather than with a file and a
    document number."""
    prefix = f"{where}: document 1 ("
    if problem.startswith(prefix):
        _, _, rest = problem[len(prefix) :].partition("): ")
        return f"{where}: {rest}" if rest else problem
    return problem


def load_manifests(
    paths: Sequence[Path],
    *,
    config: AutoscalerConfig = DEFAULT,
    checks: Sequence[Callable[[Service], list[str]]] = (),
    event_checks: Sequence[Callable[[EventObject], list[str]]] = (),
) -> Manifests:
    """Parse every file: its Services, ConfigMaps, Secrets and Eventing objects. An object defined twice
    (same kind, namespace and name) in any files is an error.

    Annotations are validated against the cluster-wide autoscaler `config`; `checks` (e.g. `local_problems`)
    run on every Service that parsed (`event_checks` on every Eventing object), so one error lists every
    problem of every file at once.
    """
    texts: list[tuple[Path, str | document.DocumentError]] = []
    for path in paths:
        try:
            texts.append((path, document.read_text(path)))
        except document.DocumentError as exc:
            texts.append((path, exc))
    return _parse_all(texts, config, checks, event_checks)


def parse_manifests(
    texts: Sequence[tuple[Path, str]],
    *,
    config: AutoscalerConfig = DEFAULT,
    checks: Sequence[Callable[[Service], list[str]]] = (),
    event_checks: Sequence[Callable[[EventObject], list[str]]] = (),
) -> Manifests:
    """`load_manifests` of texts already read (`serving apply` sends its files' text): each is named by the
    path it was read from, and every problem of every text is in one `ServiceFileError`."""
    return _parse_all(texts, config, checks, event_checks)


def _parse_all(
    texts: Sequence[tuple[Path, str | document.DocumentError]],
    config: AutoscalerConfig,
    checks: Sequence[Callable[[Service], list[str]]],
    event_checks: Sequence[Callable[[EventObject], list[str]]] = (),
) -> Manifests:
    """Every problem in the order of the files: one that could not be read, then the next one's..."""
    problems: list[str] = []
    manifests = Manifests([], [])
    for path, text in texts:
        if isinstance(text, document.DocumentError):
            problems.append(text.problem)
            continue
        found = _parse_text(text, path, problems, config)
        manifests.services.extend(found.services)
        manifests.configs.extend(found.configs)
        manifests.events.extend(found.events)
    problems += duplicate_problems(manifests)
    problems += [p for check in checks for s in manifests.services for p in check(s)]
    problems += [p for check in event_checks for e in manifests.events for p in check(e)]
    if problems:
        raise ServiceFileError(problems)
    return manifests


def load_files(
    paths: Sequence[Path],
    *,
    config: AutoscalerConfig = DEFAULT,
    checks: Sequence[Callable[[Service], list[str]]] = (),
) -> list[Service]:
    """The Services of `load_manifests` (whose ConfigMaps and Secrets are checked all the same)."""
    return load_manifests(paths, config=config, checks=checks).services


def local_problems(service: Service, *, container: bool = False) -> list[str]:
    """What the local platform cannot run in a valid Service (Knative on Kubernetes would run it);
    `container`: its user container runs from its image in a container runtime."""
    return [
        f"{service.where}: {path}: {rule}"
        for path, rule in local_template_problems(service.template, service.base_dir, container=container)
    ]


def kubernetes_problems(service: Service) -> list[str]:
    """What Knative on Kubernetes needs beyond what the local platform does: an image to pull."""
    containers = (service.template.container, *service.template.sidecars)
    return [
        f"{service.where}: spec.template.spec.containers[{c.index}].image: required on Kubernetes"
        for c in sorted(containers, key=lambda c: c.index)
        if c.image is None
    ]


__all__ = [
    "API_VERSION",
    "DEFAULT_NAMESPACE",
    "KIND",
    "ConfigData",
    "Container",
    "EventObject",
    "Manifests",
    "RevisionTemplate",
    "Service",
    "ServiceFileError",
    "TrafficTarget",
    "duplicate_problems",
    "kubernetes_problems",
    "load_files",
    "load_manifests",
    "local_problems",
    "parse_documents",
    "parse_manifests",
    "parse_object",
]
