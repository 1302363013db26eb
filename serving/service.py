"""The Knative Service model: `serving.knative.dev/v1` Service documents parsed and validated from YAML.

Validation follows Knative's admission webhook (and the Kubernetes schema behind it), so a file accepted
here is accepted by a cluster; every problem in every file is reported at once, and nothing runs while any
remains. Checks that only the local platform needs live in `local_problems`, so the Kubernetes path can skip
them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from serving import document
from serving.autoscaling import DEFAULT, AutoscalerConfig
from serving.container import Container
from serving.duration import DurationError, parse_duration_nanos
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

# ObjectMeta fields the API server fills in; present in `kubectl get -o yaml` output and ignored here.
_SERVER_META: Final = frozenset(
    {
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "ownerReferences",
        "finalizers",
        "selfLink",
    }
)
_META_FIELDS: Final = frozenset({"name", "namespace", "labels", "annotations"}) | _SERVER_META
ROLLOUT_DURATION: Final = "serving.knative.dev/rollout-duration"


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


def _yaml_documents(text: str, source: Path, problems: list[str]) -> list[object] | None:
    try:
        return document.parse(text, source)
    except document.DocumentError as exc:
        problems.append(exc.problem)
    return None


def _parse_text(text: str, source: Path, problems: list[str], config: AutoscalerConfig) -> list[Service]:
    docs = _yaml_documents(text, source, problems)
    if docs is None:
        return []
    services: list[Service] = []
    found = False
    for index, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        found = True
        service = _parse_document(doc, source, index, problems, config)
        if service is not None:
            services.append(service)
    if not found:
        problems.append(f"{source}: no Service documents in this file")
    return services


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
        r.add(
            "kind", f"required: this file should hold `apiVersion: {API_VERSION}`, `kind: {KIND}` documents"
        )
        return None
    if kind != KIND:
        r.add("kind", f"{kind!r} is not supported: `serving up` runs only {API_VERSION} Service documents")
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
    r.fields(meta, "metadata", _META_FIELDS, {"generateName": "not supported: give the Service a `name`"})
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


def _duplicate_problems(services: Sequence[Service]) -> list[str]:
    first: dict[tuple[str, str], Service] = {}
    problems: list[str] = []
    for service in services:
        seen = first.get(service.key)
        if seen is None:
            first[service.key] = service
            continue
        problems.append(
            f"{service.where}: metadata.name: Service {service.namespace}/{service.name} is already defined "
            f"in {seen.source} document {seen.document}"
        )
    return problems


def parse_documents(text: str, source: Path, config: AutoscalerConfig = DEFAULT) -> list[Service]:
    """Parse every Service in a YAML stream; raise `ServiceFileError` listing every problem."""
    problems: list[str] = []
    services = _parse_text(text, source, problems, config)
    problems += _duplicate_problems(services)
    if problems:
        raise ServiceFileError(problems)
    return services


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


def load_files(
    paths: Sequence[Path],
    *,
    config: AutoscalerConfig = DEFAULT,
    checks: Sequence[Callable[[Service], list[str]]] = (),
) -> list[Service]:
    """Parse every file; a Service defined twice (same namespace and name) in any files is an error.

    Annotations are validated against the cluster-wide autoscaler `config`; `checks` (e.g. `local_problems`)
    run on every Service that parsed, so one error lists every problem of every file at once.
    """
    problems: list[str] = []
    services: list[Service] = []
    for path in paths:
        try:
            text = document.read_text(path)
        except document.DocumentError as exc:
            problems.append(exc.problem)
            continue
        services += _parse_text(text, path, problems, config)
    problems += _duplicate_problems(services)
    problems += [p for check in checks for s in services for p in check(s)]
    if problems:
        raise ServiceFileError(problems)
    return services


def local_problems(service: Service) -> list[str]:
    """What the local platform cannot run in a valid Service (Knative on Kubernetes would run it)."""
    return [
        f"{service.where}: {path}: {rule}"
        for path, rule in local_template_problems(service.template, service.base_dir)
    ]


def kubernetes_problems(service: Service) -> list[str]:
    """What Knative on Kubernetes needs beyond what the local platform does: an image to pull."""
    if service.template.container.image is None:
        return [f"{service.where}: spec.template.spec.containers[0].image: required on Kubernetes"]
    return []


__all__ = [
    "API_VERSION",
    "DEFAULT_NAMESPACE",
    "KIND",
    "Container",
    "RevisionTemplate",
    "Service",
    "ServiceFileError",
    "TrafficTarget",
    "kubernetes_problems",
    "load_files",
    "local_problems",
    "parse_documents",
    "parse_object",
]
