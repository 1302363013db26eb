"""Knative Eventing resources: `eventing.knative.dev/v1` Broker and Trigger, and the `sources.knative.dev`
PingSource, SinkBinding, ContainerSource and GitHubSource, parsed and validated from YAML.

They sit in the same files as Services (and are applied the same way); validation follows Knative Eventing's
admission webhooks and CRD schemas, and every problem names the file, the document, the field and the rule.
What Knative accepts but the local platform cannot run (another broker class, a ref it cannot resolve) is in
`local_event_problems`, so the Kubernetes path can skip it, as `serving.service.local_problems` does.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypedDict, TypeVar
from urllib.parse import urlsplit

from serving.configdata import META_FIELDS, config_key_problem, dns1123_subdomain_problem
from serving.container import INT32_MAX, Container, parse_container
from serving.cron import schedule_problem
from serving.validation import (
    FieldReader,
    dns1123_label_problem,
    join,
    label_value_problem,
    qualified_name_problem,
    type_name,
)
from serving.volume import check_volumes

EVENTING_V1: Final = "eventing.knative.dev/v1"
SOURCES_V1: Final = "sources.knative.dev/v1"
SOURCES_V1ALPHA1: Final = "sources.knative.dev/v1alpha1"
"""GitHubSource is still v1alpha1 (knative-extensions/eventing-github)."""
SERVING_V1: Final = "serving.knative.dev/v1"
BROKER: Final = "Broker"
TRIGGER: Final = "Trigger"
PING_SOURCE: Final = "PingSource"
SINK_BINDING: Final = "SinkBinding"
CONTAINER_SOURCE: Final = "ContainerSource"
GITHUB_SOURCE: Final = "GitHubSource"
API_VERSIONS: Final = {
    BROKER: EVENTING_V1,
    TRIGGER: EVENTING_V1,
    PING_SOURCE: SOURCES_V1,
    SINK_BINDING: SOURCES_V1,
    CONTAINER_SOURCE: SOURCES_V1,
    GITHUB_SOURCE: SOURCES_V1ALPHA1,
}
"""The apiVersion each Eventing kind is read at."""
KINDS: Final = tuple(API_VERSIONS)
SUPPORTED_KINDS: Final = (
    f"{EVENTING_V1} Broker and Trigger, {SOURCES_V1} PingSource, SinkBinding and ContainerSource, "
    f"{SOURCES_V1ALPHA1} GitHubSource"
)
"""The Eventing part of what a file may hold, for messages."""
DEFAULT_NAMESPACE: Final = "default"

BROKER_CLASS_ANNOTATION: Final = "eventing.knative.dev/broker.class"
EMBEDDED_CLASS: Final = "MTChannelBasedBroker"
"""Knative's default class; here it means the embedded durable store on local disk."""
KAFKA_CLASS: Final = "Kafka"
"""Knative's Kafka broker class: the Kafka backend (one topic per Broker, a consumer group per Trigger)."""
BROKER_CLASSES: Final = (EMBEDDED_CLASS, KAFKA_CLASS)
"""The classes the local platform runs; Knative accepts any (a cluster may install others)."""

SUBSCRIBER_REFS: Final = frozenset({(SERVING_V1, "Service")})
"""(apiVersion, kind) a Trigger's subscriber or a dead-letter sink may point at locally."""
SINK_REFS: Final = frozenset({(SERVING_V1, "Service"), (EVENTING_V1, BROKER)})
"""(apiVersion, kind) a source's sink may point at locally: a Service, or a Broker to fan events out."""
SUBJECT_REFS: Final = frozenset({(SERVING_V1, "Service")})
"""(apiVersion, kind) a SinkBinding's subject may be locally: a Knative Service, whose pods get the binding's
variables when they start (a ContainerSource binds its own sink)."""

CLUSTER_SUBJECT_REFS: Final = SUBJECT_REFS | {
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "CronJob"),
}
"""(apiVersion, kind) a SinkBinding's subject may be on Kubernetes: a Knative Service (its revisions'
Deployments), or a workload whose pod template gets the binding's variables (a CronJob's job template, so
that every Job it makes from then on has them). Not a Job: its pod template cannot change once it exists
(Knative binds a Job only when it is created, through an admission webhook this platform does not run)."""

CE_RESERVED: Final = frozenset(
    {"id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time", "data"}
)
"""CloudEvents context attributes (and `data`, the JSON format's payload member): the source sets them, so
`ceOverrides.extensions` may not name them."""
GITHUB_EVENT_TYPES: Final = frozenset(
    {
        "check_suite",
        "commit_comment",
        "create",
        "delete",
        "deployment",
        "deployment_status",
        "fork",
        "gollum",
        "installation",
        "integration_installation",
        "issue_comment",
        "issues",
        "label",
        "member",
        "membership",
        "milestone",
        "organization",
        "org_block",
        "page_build",
        "ping",
        "project_card",
        "project_column",
        "project",
        "public",
        "pull_request",
        "pull_request_review",
        "pull_request_review_comment",
        "push",
        "release",
        "repository",
        "status",
        "team",
        "team_add",
        "watch",
    }
)
"""The `eventTypes` the GitHubSource CRD's schema accepts (its enum)."""
ISO_DURATION: Final = "an ISO 8601 duration such as PT0.2S, PT1M30S or P1D"
"""How every `backoffDelay` and `timeout` error describes the accepted form."""

_OBJECT_FIELDS: Final = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
_FILTER_ATTRIBUTE_RE: Final = re.compile(r"^[a-z][a-z0-9]*$")
_EXTENSION_RE: Final = re.compile(r"^[a-z0-9]+$")
_C_IDENTIFIER_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GITHUB_OWNER_RE: Final = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?$")
_GITHUB_REPO_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_NUMBER: Final = r"(\d+(?:[.,]\d+)?)"
_ISO_DURATION_RE: Final = re.compile(
    rf"P(?:{_NUMBER}Y)?(?:{_NUMBER}M)?(?:{_NUMBER}W)?(?:{_NUMBER}D)?"
    rf"(?:(T)(?:{_NUMBER}H)?(?:{_NUMBER}M)?(?:{_NUMBER}S)?)?"
)
# Seconds per unit of each group of _ISO_DURATION_RE after the `T` (group 5); years and months have none.
_ISO_UNITS: Final = ((3, 7 * 86400), (4, 86400), (6, 3600), (7, 60), (8, 1))
_BASE64_NEWLINES: Final = str.maketrans("", "", "\r\n")
_NOT_SUPPORTED: Final = "not supported here"
_DESTINATION_DISALLOWED: Final = {
    "CACerts": "not supported here: events go over plain HTTP, or HTTPS with the system's CAs",
    "audience": "not supported here: events are sent without OIDC tokens",
}
_KREF_DISALLOWED: Final = {
    "group": "not allowed: needs Knative's feature flag kreference-group (off by default)",
    "address": _NOT_SUPPORTED,
}
_BROKER_REF: Final = "not supported here: name the Broker in `broker`"
_SOURCE_POD_FIELDS: Final = frozenset(
    {
        "containers",
        "volumes",
        "serviceAccountName",
        "imagePullSecrets",
        "enableServiceLinks",
        "automountServiceAccountToken",
    }
)
_SOURCE_POD_NOT_SUPPORTED: Final = {
    k: f"{_NOT_SUPPORTED}: a ContainerSource takes {', '.join(sorted(_SOURCE_POD_FIELDS))}"
    for k in (
        "affinity",
        "tolerations",
        "nodeSelector",
        "nodeName",
        "securityContext",
        "initContainers",
        "hostNetwork",
        "hostPID",
        "hostIPC",
        "dnsPolicy",
        "dnsConfig",
        "hostAliases",
        "priorityClassName",
        "runtimeClassName",
        "schedulerName",
        "restartPolicy",
        "terminationGracePeriodSeconds",
        "topologySpreadConstraints",
        "shareProcessNamespace",
    )
}

Dialect = Literal["exact", "prefix", "suffix", "all", "any", "not"]
_DIALECTS: Final[tuple[Dialect, ...]] = ("exact", "prefix", "suffix", "all", "any", "not")
BackoffPolicy = Literal["exponential", "linear"]
_BACKOFF_POLICIES: Final[tuple[BackoffPolicy, ...]] = ("exponential", "linear")
DeliveryFormat = Literal["json", "binary"]
_DELIVERY_FORMATS: Final[tuple[DeliveryFormat, ...]] = ("json", "binary")


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """duckv1.KReference: the object a Destination or a SinkBinding's subject points at."""

    kind: str
    name: str
    namespace: str
    """The referring object's namespace when the ref names none (Knative's defaulting)."""
    api_version: str


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """metav1.LabelSelector: every `match_labels` pair and every expression must hold (an empty selector
    selects everything, as in Kubernetes)."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    """(key, operator, values): `In`, `NotIn`, `Exists`, `DoesNotExist`."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(key) != value for key, value in self.match_labels):
            return False
        for key, operator, values in self.match_expressions:
            present = key in labels
            if operator == "In" and not (present and labels[key] in values):
                return False
            if operator == "NotIn" and present and labels[key] in values:
                return False
            if operator == "Exists" and not present:
                return False
            if operator == "DoesNotExist" and present:
                return False
        return True


SELECTOR_OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True, slots=True)
class Destination:
    """duckv1.Destination: a `ref` (resolved to its address), a `uri`, or both (the uri relative to the ref's
    address)."""

    ref: ObjectRef | None = None
    uri: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """eventingduckv1.DeliverySpec."""

    retry: int | None = None
    """Retries after the first attempt (Knative: `retry`); None: no retry."""
    backoff_policy: BackoffPolicy = "exponential"
    backoff_delay: float | None = None
    """Seconds, from the ISO 8601 duration `backoffDelay` (`PT0.2S`)."""
    timeout: float | None = None
    """Seconds, from the ISO 8601 duration `timeout`: one attempt's limit."""
    dead_letter_sink: Destination | None = None
    format: DeliveryFormat | None = None
    """`format`: events sent in structured JSON or binary HTTP mode; None: as they arrived."""


@dataclass(frozen=True, slots=True)
class Filter:
    """One node of a Trigger's `filters` (the SubscriptionsAPI dialect): `exact`, `prefix` or `suffix` over
    `attributes`, or `all`/`any` over `children`, or `not` over its single child."""

    dialect: Dialect
    attributes: Mapping[str, str] = field(default_factory=dict)
    children: tuple[Filter, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class EventObject:
    """What every Eventing resource shares: identity, metadata and where it was read from."""

    kind: str
    name: str
    namespace: str
    """`default` when the document names none (kubectl's default namespace)."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    source: Path
    """The YAML file the object came from."""
    document: int = 1
    """1-based index of the document in `source`, for messages."""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    @property
    def where(self) -> str:
        """Message prefix naming the file and the document."""
        return f"{self.source}: document {self.document} ({self.kind}/{self.name})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Broker(EventObject):
    broker_class: str = EMBEDDED_CLASS
    """The `eventing.knative.dev/broker.class` annotation (Knative's default class when absent)."""
    config: ObjectRef | None = None
    """`spec.config`: for the Kafka class, a ConfigMap with `bootstrap.servers` (and
    `default.topic.partitions`, `default.topic.replication.factor`), as Knative's Kafka broker reads it."""
    delivery: Delivery | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Trigger(EventObject):
    broker: str
    filter_attributes: Mapping[str, str] = field(default_factory=dict)
    """`spec.filter.attributes`: every one must equal the event's attribute ('' matches any value)."""
    filters: tuple[Filter, ...] = ()
    """`spec.filters`: all must match (when present, `spec.filter` is ignored, as Knative does)."""
    subscriber: Destination
    delivery: Delivery | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PingSource(EventObject):
    schedule: str
    """Cron (five fields, or `@hourly`-style), as `serving.cron` reads it."""
    timezone: str | None = None
    """An IANA zone name (`spec.timezone`); None: UTC."""
    content_type: str | None = None
    data: bytes = b""
    """`spec.data` (UTF-8) or the decoded `spec.dataBase64`."""
    sink: Destination
    ce_overrides: Mapping[str, str] = field(default_factory=dict)
    """`spec.ceOverrides.extensions`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkBinding(EventObject):
    subject: ObjectRef
    """The workload that gets `K_SINK` and `K_CE_OVERRIDES`: here a Knative Service (or a ContainerSource).
    With `selector`, its `name` is empty: every workload of that kind in the namespace that the selector
    matches is a subject."""
    sink: Destination
    selector: LabelSelector | None = None
    """`spec.subject.selector` (Kubernetes only)."""
    ce_overrides: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerSource(EventObject):
    container: Container
    """`spec.template.spec.containers[0]`: run with `K_SINK` and `K_CE_OVERRIDES` in its environment. An
    unnamed container is named `<source>-<index>` (Knative's defaulting)."""
    sink: Destination
    ce_overrides: Mapping[str, str] = field(default_factory=dict)
    base_dir: Path
    """The file's folder: `workingDir` resolves against it, as for a Service."""
    extra_containers: tuple[Container, ...] = ()
    """The containers after the first: Knative runs them all in one pod; the local platform runs one
    (`local_event_problems` says so)."""
    template: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """`spec.template` as written (JSON-able): its volumes, for a container runtime to mount."""


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GitHubSource(EventObject):
    owner_and_repository: str
    event_types: tuple[str, ...]
    secret_token: SecretKeyRef
    """The webhook secret that signs each delivery (`X-Hub-Signature-256`)."""
    access_token: SecretKeyRef | None = None
    sink: Destination
    ce_overrides: Mapping[str, str] = field(default_factory=dict)
    github_api_url: str | None = None
    """`githubAPIURL`: a GitHub Enterprise API (`https://ghe.example.com/api/v3/`) for registering the
    webhook; None: github.com."""
    secure: bool | None = None
    """`secure`: whether the webhook GitHub calls is https (None: the receiving address's own scheme)."""


class IsoDurationError(ValueError):
    """`text` is not an ISO 8601 duration of a fixed length; the message says why and shows the form."""


class _Identity(TypedDict):
    kind: str
    name: str
    namespace: str
    annotations: Mapping[str, str]
    labels: Mapping[str, str]
    source: Path
    document: int


_Parse = Callable[[FieldReader, Mapping[str, Any], _Identity], EventObject | None]
T = TypeVar("T", bound=EventObject)


class HasEvents(Protocol):
    """What the accessors read: `serving.service.Manifests` (declared here to keep the import one-way)."""

    @property
    def events(self) -> Sequence[EventObject]: ...


# --- durations ----------------------------------------------------------------------------------------------


def parse_iso8601_duration(text: str) -> float:
    """Seconds of an ISO 8601 duration (`PT0.2S`, `PT1M30S`, `P1DT12H`, `P2W`), as Knative's `backoffDelay`
    and `timeout` are written; raises `IsoDurationError`.

    Strict: the designators in order, at least one amount, a fraction (`.` or `,`) only on the last one, no
    sign. Years and months are refused: they have no fixed length in seconds.
    """
    match = _ISO_DURATION_RE.fullmatch(text)
    if match is None:
        raise IsoDurationError(f"{text!r} is not {ISO_DURATION}")
    amounts = [g for i, g in enumerate(match.groups(), start=1) if g is not None and i != 5]
    if not amounts or (match.group(5) and not any(match.group(i) for i in (6, 7, 8))):
        raise IsoDurationError(f"{text!r} is not {ISO_DURATION}: it names no amount after P or T")
    if match.group(1) or match.group(2):
        raise IsoDurationError(
            f"{text!r}: years and months have no fixed length; write days, e.g. P30D ({ISO_DURATION})"
        )
    if any(("." in a or "," in a) for a in amounts[:-1]):
        raise IsoDurationError(f"{text!r}: only the last amount may have a fraction ({ISO_DURATION})")
    return sum(float(match.group(i).replace(",", ".")) * unit for i, unit in _ISO_UNITS if match.group(i))


def _iso_duration(r: FieldReader, obj: Mapping[str, Any], key: str, path: str) -> float | None:
    text = r.string(obj, key, path)
    if text is None:
        return None
    try:
        return parse_iso8601_duration(text)
    except IsoDurationError as exc:
        r.add(join(path, key), str(exc))
        return None


# --- shared parts -------------------------------------------------------------------------------------------


def _required(r: FieldReader, obj: Mapping[str, Any], key: str, path: str, why: str = "") -> str | None:
    """A string field that must be present and non-empty (Go reads a missing string as '')."""
    raw = obj.get(key)
    value = r.string(obj, key, path)
    if value:
        return value
    if raw is None or raw == "":
        r.add(join(path, key), f"required: {why}" if why else "required")
    return None


def _metadata(
    r: FieldReader, raw: object, kind: str
) -> tuple[str | None, str, dict[str, str], dict[str, str]]:
    """Name (a DNS-1123 subdomain, Kubernetes' rule for custom resources), namespace, annotations, labels."""
    meta = r.mapping(raw, "metadata") or {}
    r.fields(meta, "metadata", META_FIELDS, {"generateName": f"not supported: give the {kind} a `name`"})
    name = _required(r, meta, "name", "metadata")
    r.check("metadata.name", name, dns1123_subdomain_problem)
    namespace = r.string(meta, "namespace", "metadata") or DEFAULT_NAMESPACE
    r.check("metadata.namespace", namespace, dns1123_label_problem)
    annotations = r.string_map(meta, "annotations", "metadata")
    labels = r.string_map(meta, "labels", "metadata", label_value_problem)
    return name, namespace, annotations, labels


def _kref(r: FieldReader, raw: object, path: str, namespace: str) -> ObjectRef | None:
    """duckv1.KReference: apiVersion, kind and name required; the namespace defaults to the referrer's."""
    obj = r.mapping(raw, path)
    if obj is None:
        return None
    r.fields(obj, path, {"apiVersion", "kind", "name", "namespace"}, _KREF_DISALLOWED)
    api_version = _required(r, obj, "apiVersion", path)
    kind = _required(r, obj, "kind", path)
    name = _required(r, obj, "name", path)
    ref_namespace = r.string(obj, "namespace", path) or namespace
    r.check(join(path, "namespace"), ref_namespace, dns1123_label_problem)
    if api_version is None or kind is None or name is None:
        return None
    return ObjectRef(kind=kind, name=name, namespace=ref_namespace, api_version=api_version)


def _absolute_uri_problem(uri: str) -> str | None:
    try:
        parts = urlsplit(uri)
        scheme, host = parts.scheme, parts.hostname
    except ValueError:
        scheme, host = "", None
    if scheme not in ("http", "https") or not host:
        return f"{uri!r} is not an absolute http(s) URL: without a ref, uri is the whole address"
    return None


def _relative_uri_problem(uri: str) -> str | None:
    try:
        parts = urlsplit(uri)
    except ValueError:
        return f"{uri!r} is not a URI reference"
    if parts.scheme or parts.netloc:
        return (
            f"{uri!r} is absolute: beside a ref, uri is a path relative to the ref's address "
            "(such as /events), as Knative requires"
        )
    return None


def _destination(
    r: FieldReader, raw: object, path: str, namespace: str, *, required: bool
) -> Destination | None:
    """duckv1.Destination: a ref, an absolute http(s) uri, or a ref with a uri relative to its address."""
    if raw is None:
        if required:
            r.add(path, "required: where events go, a `ref` to an object or a `uri`")
        return None
    obj = r.mapping(raw, path)
    if obj is None:
        return None
    r.fields(obj, path, {"ref", "uri"}, _DESTINATION_DISALLOWED)
    has_ref = obj.get("ref") is not None
    ref = _kref(r, obj["ref"], join(path, "ref"), namespace) if has_ref else None
    uri = r.string(obj, "uri", path)
    if not has_ref and obj.get("uri") is None:
        r.add(path, "expected a ref or a uri (or both), got neither")
    rule = _relative_uri_problem if has_ref else _absolute_uri_problem
    r.check(join(path, "uri"), uri, rule)
    return Destination(ref=ref, uri=uri)


def _delivery(r: FieldReader, raw: object, path: str, namespace: str) -> Delivery | None:
    """eventingduckv1.DeliverySpec, as Knative's webhook checks it (delivery-timeout is on by default)."""
    if raw is None:
        return None
    obj = r.mapping(raw, path)
    if obj is None:
        return None
    retry_after = "not allowed: needs Knative's feature flag delivery-retryafter (off by default)"
    r.fields(
        obj,
        path,
        {"deadLetterSink", "retry", "backoffPolicy", "backoffDelay", "timeout", "format"},
        {"retryAfterMax": retry_after},
    )
    dead_letter = _destination(
        r, obj.get("deadLetterSink"), join(path, "deadLetterSink"), namespace, required=False
    )
    retry = r.integer(obj, "retry", path, 0, INT32_MAX, why="0 or more")
    policy = _choice(r, obj, "backoffPolicy", path, _BACKOFF_POLICIES)
    delay = _iso_duration(r, obj, "backoffDelay", path)
    timeout = _iso_duration(r, obj, "timeout", path)
    if timeout == 0:
        r.add(join(path, "timeout"), "must be longer than zero")
    delivery_format = _choice(r, obj, "format", path, _DELIVERY_FORMATS)
    return Delivery(
        retry=retry,
        backoff_policy=policy or "exponential",
        backoff_delay=delay,
        timeout=timeout,
        dead_letter_sink=dead_letter,
        format=delivery_format,
    )


_C = TypeVar("_C", bound=str)


def _choice(
    r: FieldReader, obj: Mapping[str, Any], key: str, path: str, choices: tuple[_C, ...]
) -> _C | None:
    value = r.string(obj, key, path)
    if value is None:
        return None
    for choice in choices:
        if value == choice:
            return choice
    r.add(join(path, key), f"{value!r} is not {' or '.join(choices)}")
    return None


def _filter_attribute_problem(name: str) -> str | None:
    if not _FILTER_ATTRIBUTE_RE.match(name):
        return (
            f"{name!r} is not a CloudEvents attribute name Knative filters on: lower-case letters and "
            "digits, starting with a letter"
        )
    return None


def _extension_problem(name: str) -> str | None:
    if not _EXTENSION_RE.match(name):
        return f"{name!r} is not a CloudEvents attribute name: lower-case letters and digits only"
    if name in CE_RESERVED:
        return f"{name!r} is a CloudEvents context attribute the source sets itself, not an extension"
    return None


def _attributes(
    r: FieldReader,
    raw: object,
    path: str,
    rule: Callable[[str], str | None],
    *,
    non_empty: bool = False,
) -> dict[str, str]:
    """A map of CloudEvents attribute names to strings; `non_empty`: values may not be '' either."""
    obj = r.mapping(raw, path)
    out: dict[str, str] = {}
    for key, value in (obj or {}).items():
        where = join(path, str(key))
        if not isinstance(key, str):
            r.add(where, f"key must be a string, not a {type_name(key)}")
            continue
        r.check(where, key, rule)
        if not isinstance(value, str):
            r.add(where, f'value must be a string, not a {type_name(value)} (quote it: "{value}")')
        elif non_empty and not value:
            r.add(where, "must not be empty: it would match every value")
        else:
            out[key] = value
    return out


def _overrides(r: FieldReader, raw: object, path: str) -> dict[str, str]:
    """duckv1.CloudEventOverrides: extension attributes set on every event the source sends."""
    obj = r.mapping(raw, path)
    if obj is None:
        return {}
    r.fields(obj, path, {"extensions"})
    return _attributes(r, obj.get("extensions"), join(path, "extensions"), _extension_problem)


def _secret_key_ref(
    r: FieldReader, raw: object, path: str, *, required: bool, why: str
) -> SecretKeyRef | None:
    """`{secretKeyRef: {name, key}}`: where a GitHubSource's token is kept."""
    if raw is None:
        if required:
            r.add(path, f"required: {why}")
        return None
    obj = r.mapping(raw, path)
    if obj is None:
        return None
    r.fields(obj, path, {"secretKeyRef"})
    where = join(path, "secretKeyRef")
    ref = r.mapping(obj.get("secretKeyRef"), where)
    if ref is None:
        return None
    if not ref:
        if required:
            r.add(where, f"required: {why}")
        return None
    r.fields(ref, where, {"name", "key", "optional"})
    name = _required(r, ref, "name", where)
    r.check(join(where, "name"), name, dns1123_subdomain_problem)
    key = _required(r, ref, "key", where)
    r.check(join(where, "key"), key, config_key_problem)
    r.boolean(ref, "optional", where)
    return SecretKeyRef(name=name, key=key) if name and key else None


# --- the kinds ----------------------------------------------------------------------------------------------


def _broker(r: FieldReader, spec: Mapping[str, Any], ident: _Identity) -> Broker:
    r.fields(spec, "spec", {"config", "delivery"})
    namespace = ident["namespace"]
    broker_class = ident["annotations"].get(BROKER_CLASS_ANNOTATION) or EMBEDDED_CLASS
    config = _kref(r, spec["config"], "spec.config", namespace) if spec.get("config") is not None else None
    if broker_class == KAFKA_CLASS:
        if spec.get("config") is None:
            r.add(
                "spec.config",
                "required for the Kafka class: a v1 ConfigMap with bootstrap.servers (Knative's Kafka "
                "broker reads it)",
            )
        elif config is not None and (config.api_version, config.kind) != ("v1", "ConfigMap"):
            r.add(
                "spec.config", f"the Kafka class reads a v1 ConfigMap, not {config.api_version} {config.kind}"
            )
    delivery = _delivery(r, spec.get("delivery"), "spec.delivery", namespace)
    return Broker(**ident, broker_class=broker_class, config=config, delivery=delivery)


def _trigger(r: FieldReader, spec: Mapping[str, Any], ident: _Identity) -> Trigger | None:
    r.fields(
        spec, "spec", {"broker", "filter", "filters", "subscriber", "delivery"}, {"brokerRef": _BROKER_REF}
    )
    namespace = ident["namespace"]
    broker = _required(r, spec, "broker", "spec", "the name of a Broker in the Trigger's namespace")
    r.check("spec.broker", broker, dns1123_subdomain_problem)
    attributes: dict[str, str] = {}
    filter_spec = r.mapping(spec.get("filter"), "spec.filter")
    if filter_spec is not None:
        r.fields(filter_spec, "spec.filter", {"attributes"})
        raw = filter_spec.get("attributes")
        attributes = _attributes(r, raw, "spec.filter.attributes", _filter_attribute_problem)
    filters = [
        _filter(r, raw, f"spec.filters[{i}]")
        for i, raw in enumerate(r.sequence(spec.get("filters"), "spec.filters") or ())
    ]
    subscriber = _destination(r, spec.get("subscriber"), "spec.subscriber", namespace, required=True)
    delivery = _delivery(r, spec.get("delivery"), "spec.delivery", namespace)
    if broker is None or subscriber is None:
        return None
    return Trigger(
        **ident,
        broker=broker,
        filter_attributes=attributes,
        filters=tuple(f for f in filters if f is not None),
        subscriber=subscriber,
        delivery=delivery,
    )


def _filter(r: FieldReader, raw: object, path: str) -> Filter | None:
    """One SubscriptionsAPI filter: exactly one dialect, nested ones checked in turn."""
    obj = r.mapping(raw, path)
    if obj is None:
        return None
    cesql = "not supported here: use exact, prefix, suffix, all, any and not"
    r.fields(obj, path, _DIALECTS, {"cesql": cesql})
    present = [d for d in _DIALECTS if d in obj]
    if len(present) != 1:
        if present or "cesql" not in obj:
            got = f"; got {', '.join(present)}" if present else ""
            r.add(path, f"expected exactly one of {', '.join(_DIALECTS)}{got}")
        return None
    dialect = present[0]
    where = join(path, dialect)
    if dialect == "not":
        child = _filter(r, obj[dialect], where)
        return Filter(dialect, children=(child,)) if child is not None else None
    if dialect in ("all", "any"):
        items = r.sequence(obj[dialect], where)
        if items is not None and not items:
            r.add(where, "must hold at least one filter")
        children = [_filter(r, item, f"{where}[{i}]") for i, item in enumerate(items or ())]
        if not children or any(c is None for c in children):
            return None
        return Filter(dialect, children=tuple(c for c in children if c is not None))
    before = len(r.problems)
    attributes = _attributes(r, obj[dialect], where, _filter_attribute_problem, non_empty=dialect != "exact")
    if not attributes:
        if len(r.problems) == before:
            r.add(where, "must name at least one attribute")
        return None
    return Filter(dialect, attributes=attributes)


def _ping_source(r: FieldReader, spec: Mapping[str, Any], ident: _Identity) -> PingSource | None:
    r.fields(
        spec, "spec", {"schedule", "timezone", "contentType", "data", "dataBase64", "sink", "ceOverrides"}
    )
    schedule = _required(r, spec, "schedule", "spec", "a cron schedule such as '*/5 * * * *'")
    timezone = r.string(spec, "timezone", "spec") or None
    zone_problem = _timezone_problem(timezone) if timezone is not None else None
    if zone_problem:
        r.add("spec.timezone", zone_problem)
    # Knative reads the two together (`CRON_TZ=<timezone> <schedule>`); a bad zone is reported once, above.
    zone = None if zone_problem else timezone
    r.check("spec.schedule", schedule, lambda text: schedule_problem(text, zone))
    content_type = r.string(spec, "contentType", "spec") or None
    data = _ping_data(r, spec, content_type)
    sink = _destination(r, spec.get("sink"), "spec.sink", ident["namespace"], required=True)
    overrides = _overrides(r, spec.get("ceOverrides"), "spec.ceOverrides")
    if schedule is None or sink is None:
        return None
    return PingSource(
        **ident,
        schedule=schedule,
        timezone=timezone,
        content_type=content_type,
        data=data,
        sink=sink,
        ce_overrides=overrides,
    )


def _timezone_problem(name: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a path-like name
        return f"{name!r} is not an IANA time zone name, such as Europe/Paris or UTC"
    return None


def _ping_data(r: FieldReader, spec: Mapping[str, Any], content_type: str | None) -> bytes:
    """`data` or the decoded `dataBase64` (not both); a JSON object when the content type is JSON, as
    Knative checks it."""
    text = r.string(spec, "data", "spec") or ""
    encoded = r.string(spec, "dataBase64", "spec") or ""
    if text and encoded:
        r.add("spec", "may not have both data and dataBase64")
        return b""
    path, data = "spec.data", text.encode()
    if encoded:
        path = "spec.dataBase64"
        try:
            data = base64.b64decode(encoded.translate(_BASE64_NEWLINES), validate=True)
        except (binascii.Error, ValueError):
            r.add(path, "not valid base64 (standard alphabet, padded with '='); write plain text in data")
            return b""
    if data and content_type == "application/json" and not _is_json_object(data):
        r.add(path, "not a JSON object, as contentType application/json requires")
    return data


def _is_json_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:
        return False


def _sink_binding(r: FieldReader, spec: Mapping[str, Any], ident: _Identity) -> SinkBinding | None:
    r.fields(spec, "spec", {"subject", "sink", "ceOverrides"})
    found = _subject(r, spec.get("subject"), "spec.subject", ident["namespace"])
    sink = _destination(r, spec.get("sink"), "spec.sink", ident["namespace"], required=True)
    overrides = _overrides(r, spec.get("ceOverrides"), "spec.ceOverrides")
    if found is None or sink is None:
        return None
    subject, selector = found
    return SinkBinding(**ident, subject=subject, sink=sink, ce_overrides=overrides, selector=selector)


def _subject(
    r: FieldReader, raw: object, path: str, namespace: str
) -> tuple[ObjectRef, LabelSelector | None] | None:
    """tracker.Reference: a `name`, or a label `selector` (the ref's name is then empty); in the binding's
    own namespace."""
    if raw is None:
        r.add(path, "required: the workload to bind (apiVersion, kind and name or selector)")
        return None
    obj = r.mapping(raw, path)
    if obj is None:
        return None
    r.fields(obj, path, {"apiVersion", "kind", "name", "namespace", "selector"})
    api_version = _required(r, obj, "apiVersion", path)
    r.check(join(path, "apiVersion"), api_version, qualified_name_problem)
    kind = _required(r, obj, "kind", path)
    r.check(join(path, "kind"), kind, _c_identifier_problem)
    selector: LabelSelector | None = None
    name: str | None = ""
    if "selector" in obj:
        if "name" in obj:
            r.add(join(path, "name"), "not with a selector: a subject is named or selected (Knative rule)")
        selector = _selector(r, obj["selector"], join(path, "selector"))
    else:
        name = _required(r, obj, "name", path, "the workload's name, or a `selector`")
        r.check(join(path, "name"), name, dns1123_label_problem)
    subject_namespace = r.string(obj, "namespace", path) or namespace
    if subject_namespace != namespace:
        r.add(
            join(path, "namespace"), f"must be the SinkBinding's own namespace {namespace!r} (Knative rule)"
        )
    if api_version is None or kind is None or name is None or ("selector" in obj and selector is None):
        return None
    return ObjectRef(kind=kind, name=name, namespace=namespace, api_version=api_version), selector


def _selector(r: FieldReader, raw: object, path: str) -> LabelSelector | None:
    """metav1.LabelSelector, checked as the API server does."""
    obj = r.mapping(raw, path)
    if obj is None:
        return None
    errors = len(r.problems)
    r.fields(obj, path, {"matchLabels", "matchExpressions"})
    labels = r.string_map(obj, "matchLabels", path, label_value_problem)
    expressions: list[tuple[str, str, tuple[str, ...]]] = []
    items = r.sequence(obj.get("matchExpressions"), join(path, "matchExpressions")) or []
    for i, item in enumerate(items):
        where = f"{path}.matchExpressions[{i}]"
        expression = r.mapping(item, where)
        if expression is None:
            continue
        r.fields(expression, where, {"key", "operator", "values"})
        key = _required(r, expression, "key", where)
        r.check(join(where, "key"), key, qualified_name_problem)
        operator = _required(r, expression, "operator", where, " or ".join(SELECTOR_OPERATORS))
        values = r.strings(expression, "values", where)
        for value in values:
            r.check(join(where, "values"), value, label_value_problem)
        if operator is not None and operator not in SELECTOR_OPERATORS:
            r.add(join(where, "operator"), f"{operator!r} is not one of {', '.join(SELECTOR_OPERATORS)}")
        elif operator in ("In", "NotIn") and not values:
            r.add(join(where, "values"), f"required with {operator}: the values to match")
        elif operator in ("Exists", "DoesNotExist") and values:
            r.add(join(where, "values"), f"must be empty with {operator}")
        if key is not None and operator is not None:
            expressions.append((key, operator, values))
    if len(r.problems) != errors:
        return None
    return LabelSelector(tuple(sorted(labels.items())), tuple(expressions))


def _c_identifier_problem(kind: str) -> str | None:
    if not _C_IDENTIFIER_RE.match(kind):
        return f"{kind!r} is not a kind: letters, digits and '_', not starting with a digit"
    return None


def _container_source(r: FieldReader, spec: Mapping[str, Any], ident: _Identity) -> ContainerSource | None:
    r.fields(spec, "spec", {"template", "sink", "ceOverrides"})
    template = r.mapping(spec.get("template"), "spec.template")
    containers = _source_containers(r, template, ident["name"]) if template is not None else None
    sink = _destination(r, spec.get("sink"), "spec.sink", ident["namespace"], required=True)
    overrides = _overrides(r, spec.get("ceOverrides"), "spec.ceOverrides")
    if not containers or sink is None or template is None:
        return None
    return ContainerSource(
        **ident,
        container=containers[0],
        extra_containers=tuple(containers[1:]),
        sink=sink,
        ce_overrides=overrides,
        base_dir=ident["source"].parent,
        template=dict(template),
    )


def _source_containers(
    r: FieldReader, template: Mapping[str, Any], source_name: str
) -> list[Container] | None:
    """A ContainerSource's pod template: each container read as a Service's is (`parse_container`), unnamed
    ones named `<source>-<index>`; names unique, volumes mounted."""
    path = "spec.template"
    r.fields(template, path, {"metadata", "spec"})
    meta = r.mapping(template.get("metadata"), "spec.template.metadata") or {}
    r.fields(meta, "spec.template.metadata", {"name", "labels", "annotations"})
    r.string(meta, "name", "spec.template.metadata")
    r.string_map(meta, "annotations", "spec.template.metadata")
    r.string_map(meta, "labels", "spec.template.metadata", label_value_problem)
    spec_path = "spec.template.spec"
    spec = r.mapping(template.get("spec"), spec_path) or {}
    r.fields(spec, spec_path, _SOURCE_POD_FIELDS, _SOURCE_POD_NOT_SUPPORTED)
    r.string(spec, "serviceAccountName", spec_path)
    r.sequence(spec.get("imagePullSecrets"), join(spec_path, "imagePullSecrets"))
    for key in ("enableServiceLinks", "automountServiceAccountToken"):
        r.boolean(spec, key, spec_path)
    check_volumes(r, spec, spec_path)
    items = r.sequence(spec.get("containers"), f"{spec_path}.containers")
    if items is None:
        return None
    if not items:
        r.add(f"{spec_path}.containers", "required: at least one container")
        return None
    out: list[Container] = []
    names: dict[str, int] = {}
    for i, raw in enumerate(items):
        container = parse_container(r, raw, f"{spec_path}.containers[{i}]", index=i)
        if container is None:
            continue
        name = container.name or f"{source_name}-{i}"
        if name in names:
            r.add(
                f"{spec_path}.containers[{i}].name",
                f"{name!r} is already the name of containers[{names[name]}]",
            )
        names.setdefault(name, i)
        out.append(replace(container, name=name))
    return out if len(out) == len(items) else None


def _github_source(r: FieldReader, spec: Mapping[str, Any], ident: _Identity) -> GitHubSource | None:
    r.fields(
        spec,
        "spec",
        {
            "ownerAndRepository",
            "eventTypes",
            "accessToken",
            "secretToken",
            "githubAPIURL",
            "secure",
            "serviceAccountName",
            "sink",
            "ceOverrides",
        },
    )
    repository = _required(r, spec, "ownerAndRepository", "spec", "the repository, as owner/repository")
    r.check("spec.ownerAndRepository", repository, _repository_problem)
    event_types = _github_event_types(r, spec)
    secret = _secret_key_ref(
        r,
        spec.get("secretToken"),
        "spec.secretToken",
        required=True,
        why="the Secret key holding the webhook secret",
    )
    access = _secret_key_ref(
        r,
        spec.get("accessToken"),
        "spec.accessToken",
        required=False,
        why="the Secret key holding a GitHub token",
    )
    api_url = r.string(spec, "githubAPIURL", "spec") or None
    r.check("spec.githubAPIURL", api_url, _absolute_uri_problem)
    secure = r.boolean(spec, "secure", "spec")
    r.string(spec, "serviceAccountName", "spec")
    sink = _destination(r, spec.get("sink"), "spec.sink", ident["namespace"], required=True)
    overrides = _overrides(r, spec.get("ceOverrides"), "spec.ceOverrides")
    if repository is None or secret is None or sink is None:
        return None
    return GitHubSource(
        **ident,
        owner_and_repository=repository,
        event_types=event_types,
        secret_token=secret,
        access_token=access,
        sink=sink,
        ce_overrides=overrides,
        github_api_url=api_url,
        secure=secure,
    )


def _repository_problem(text: str) -> str | None:
    owner, slash, repo = text.partition("/")
    if (
        not slash
        or not _GITHUB_OWNER_RE.match(owner)
        or not _GITHUB_REPO_RE.match(repo)
        or repo in (".", "..")
    ):
        return f"{text!r} is not owner/repository, such as knative/eventing"
    return None


def _github_event_types(r: FieldReader, spec: Mapping[str, Any]) -> tuple[str, ...]:
    """At least one GitHub webhook event name, each one the GitHubSource CRD accepts."""
    path = "spec.eventTypes"
    items = r.sequence(spec.get("eventTypes"), path)
    if items is None:
        return ()
    if not items:
        r.add(path, "required: at least one GitHub event, such as push or pull_request")
        return ()
    out: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            r.add(f"{path}[{i}]", f"must be a string, not a {type_name(item)}")
        elif item not in GITHUB_EVENT_TYPES:
            r.add(
                f"{path}[{i}]", f"{item!r} is not a GitHub webhook event GitHubSource accepts, such as push"
            )
        else:
            out.append(item)
    return tuple(out)


_PARSERS: Final[dict[str, _Parse]] = {
    BROKER: _broker,
    TRIGGER: _trigger,
    PING_SOURCE: _ping_source,
    SINK_BINDING: _sink_binding,
    CONTAINER_SOURCE: _container_source,
    GITHUB_SOURCE: _github_source,
}


# --- public API ---------------------------------------------------------------------------------------------


def event_object(doc: Mapping[str, Any], source: Path, index: int, problems: list[str]) -> EventObject | None:
    """Read one Eventing document (its `kind` is one of `KINDS`); None when any problem was recorded (all of
    them are, each as `<file>: document <n> (<kind>/<name>): <field>: <rule>`)."""
    kind = doc.get("kind")
    meta = doc.get("metadata")
    raw_name = meta.get("name") if isinstance(meta, Mapping) else None
    label = f"{kind}/{raw_name if isinstance(raw_name, str) else '?'}"
    r = FieldReader(f"{source}: document {index} ({label})", problems)
    if not isinstance(kind, str) or kind not in _PARSERS:
        r.add("kind", f"{kind!r} is not an Eventing kind: expected {SUPPORTED_KINDS}")
        return None
    parse = _PARSERS[kind]
    before = len(problems)
    api_version = doc.get("apiVersion")
    if api_version != API_VERSIONS[kind]:
        r.add("apiVersion", f"must be {API_VERSIONS[kind]!r}, not {api_version!r}")
    r.fields(doc, "", _OBJECT_FIELDS)
    name, namespace, annotations, labels = _metadata(r, meta, kind)
    spec = r.mapping(doc.get("spec"), "spec")
    if spec is None:
        return None
    ident = _Identity(
        kind=kind,
        name=name or "?",
        namespace=namespace,
        annotations=annotations,
        labels=labels,
        source=source,
        document=index,
    )
    obj = parse(r, spec, ident)
    if len(problems) > before or name is None:
        return None
    return obj


def local_event_problems(obj: EventObject, *, container: bool = False) -> list[str]:
    """What the local platform cannot run in a valid Eventing object (Knative on Kubernetes would run it):
    another broker class, refs to objects it does not resolve, a ContainerSource it cannot start;
    `container`: a ContainerSource's container runs from its image in a container runtime."""
    out = _platform_problems(obj, SUBJECT_REFS, LOCALLY)
    if isinstance(obj, ContainerSource):
        out += _local_container_problems(obj, container=container)
    return [f"{obj.where}: {path}: {rule}" for path, rule in out]


def cluster_event_problems(obj: EventObject) -> list[str]:
    """What the controller on Kubernetes cannot run in a valid Eventing object: another broker class, refs it
    does not resolve, a SinkBinding's subject other than a Knative Service or a workload it binds
    (`CLUSTER_SUBJECT_REFS`), a ContainerSource container without an image (the cluster pulls it)."""
    out = _platform_problems(obj, CLUSTER_SUBJECT_REFS, ON_KUBERNETES) + _image_problems(obj)
    return [f"{obj.where}: {path}: {rule}" for path, rule in out]


def _image_problems(obj: EventObject) -> list[tuple[str, str]]:
    """A ContainerSource's containers without an image: the cluster pulls one."""
    if not isinstance(obj, ContainerSource):
        return []
    return [
        (f"spec.template.spec.containers[{c.index}].image", "required on Kubernetes")
        for c in (obj.container, *obj.extra_containers)
        if c.image is None
    ]


@dataclass(frozen=True, slots=True)
class _Where:
    """How a problem names the platform: `serving up`, or the controller on Kubernetes."""

    unsupported: str
    resolver: str


LOCALLY: Final = _Where("is not supported locally", "the local platform")
ON_KUBERNETES: Final = _Where("is not supported on Kubernetes", "the controller")


def _platform_problems(obj: EventObject, subjects: _Refs, where: _Where) -> list[tuple[str, str]]:
    """What the platform, local or on a cluster, does not run: (path, rule) pairs."""
    out: list[tuple[str, str]] = []
    if isinstance(obj, Broker) and obj.broker_class not in BROKER_CLASSES:
        out.append(
            (
                join("metadata.annotations", BROKER_CLASS_ANNOTATION),
                f"{obj.broker_class!r} {where.unsupported}: the broker classes here are "
                f"{EMBEDDED_CLASS} (an embedded durable store) and {KAFKA_CLASS}",
            )
        )
    for path, destination, refs, role in _destinations(obj):
        ref = destination.ref
        if ref is not None and (ref.api_version, ref.kind) not in refs:
            out.append((join(path, "ref"), _unresolved(ref, refs, role, where)))
    if isinstance(obj, SinkBinding) and (obj.subject.api_version, obj.subject.kind) not in subjects:
        rule = _unresolved(obj.subject, subjects, "subject", where)
        if (obj.subject.api_version, obj.subject.kind) == ("batch/v1", "Job") and where is ON_KUBERNETES:
            rule += (
                "; a Job's pod template cannot change once the Job exists: bind the CronJob that makes it, "
                "or give the Job K_SINK itself"
            )
        out.append(("spec.subject", rule))
    if isinstance(obj, SinkBinding) and obj.selector is not None:
        if where is LOCALLY:
            out.append(
                (
                    "spec.subject.selector",
                    f"{where.unsupported}: name the subject (`name`) instead of selecting it by labels",
                )
            )
        elif obj.subject.kind == "Service":
            out.append(
                (
                    "spec.subject.selector",
                    f"{where.unsupported} for a Knative Service: name it (`name`); a selector selects "
                    "Deployments, StatefulSets, DaemonSets or CronJobs",
                )
            )
    return out


def kubernetes_event_problems(obj: EventObject) -> list[str]:
    """What Knative on Kubernetes needs beyond what the local platform does: images to pull, and the access
    token the GitHubSource CRD requires (it registers the webhook with it)."""
    out = [f"{obj.where}: {path}: {rule}" for path, rule in _image_problems(obj)]
    if isinstance(obj, GitHubSource) and obj.access_token is None:
        out.append(f"{obj.where}: spec.accessToken: required on Kubernetes: the source registers its webhook")
    return out


def of_kind(manifests: HasEvents, cls: type[T]) -> list[T]:
    """The Eventing objects of one class, in file order."""
    return [obj for obj in manifests.events if isinstance(obj, cls)]


def brokers(manifests: HasEvents) -> list[Broker]:
    return of_kind(manifests, Broker)


def triggers(manifests: HasEvents, broker: Broker | None = None) -> list[Trigger]:
    """Every Trigger, or those of `broker` (same namespace and broker name)."""
    found = of_kind(manifests, Trigger)
    if broker is None:
        return found
    return [t for t in found if t.namespace == broker.namespace and t.broker == broker.name]


def sources(manifests: HasEvents) -> list[PingSource | SinkBinding | ContainerSource | GitHubSource]:
    """Every event source (PingSource, SinkBinding, ContainerSource, GitHubSource), in file order."""
    return [
        obj
        for obj in manifests.events
        if isinstance(obj, PingSource | SinkBinding | ContainerSource | GitHubSource)
    ]


_Refs = frozenset[tuple[str, str]]


def _destinations(obj: EventObject) -> Iterable[tuple[str, Destination, _Refs, str]]:
    """(path, destination, the refs it may point at locally, its role) of every destination of `obj`."""
    delivery = obj.delivery if isinstance(obj, Broker | Trigger) else None
    if isinstance(obj, Trigger):
        yield "spec.subscriber", obj.subscriber, SUBSCRIBER_REFS, "subscriber"
    if isinstance(obj, PingSource | SinkBinding | ContainerSource | GitHubSource):
        yield "spec.sink", obj.sink, SINK_REFS, "sink"
    if delivery is not None and delivery.dead_letter_sink is not None:
        yield "spec.delivery.deadLetterSink", delivery.dead_letter_sink, SUBSCRIBER_REFS, "dead-letter sink"


def _unresolved(ref: ObjectRef, refs: _Refs, role: str, where: _Where) -> str:
    ordered = sorted(refs, key=lambda r: (r[1] != "Service", r))  # a Knative Service first
    allowed = " or ".join(f"{api} {kind}" for api, kind in ordered)
    return (
        f"{ref.api_version} {ref.kind} {ref.name!r} {where.unsupported}: a {role} here must be a "
        f"{allowed}, the kinds {where.resolver} resolves"
    )


def _local_container_problems(obj: ContainerSource, *, container: bool) -> list[tuple[str, str]]:
    """As `serving.template.local_template_problems` for a Service: a process needs a `command`, volumes need
    a container runtime, and the platform runs one container per source."""
    path = "spec.template.spec"
    out: list[tuple[str, str]] = []
    if obj.extra_containers:
        count = 1 + len(obj.extra_containers)
        out.append(
            (f"{path}.containers", f"{count} containers: the local platform runs one per ContainerSource")
        )
    main = obj.container
    spec = obj.template.get("spec")
    if not container and not main.command:
        out.append(
            (
                f"{path}.containers[0].command",
                "required locally with --runtime process: a ContainerSource's container runs as a process "
                "then; add a `command`, or run its image with --runtime auto, podman or docker",
            )
        )
    if not container and isinstance(spec, Mapping) and spec.get("volumes"):
        out.append(
            (
                f"{path}.volumes",
                "volumes need a container runtime: a process has none; run its image with --runtime auto, "
                "podman or docker",
            )
        )
    if not container and main.working_dir is not None and not (obj.base_dir / main.working_dir).is_dir():
        out.append(
            (f"{path}.containers[0].workingDir", f"{obj.base_dir / main.working_dir} is not a directory")
        )
    return out


__all__ = [
    "API_VERSIONS",
    "BROKER_CLASSES",
    "BROKER_CLASS_ANNOTATION",
    "CLUSTER_SUBJECT_REFS",
    "EMBEDDED_CLASS",
    "KAFKA_CLASS",
    "KINDS",
    "SUPPORTED_KINDS",
    "Broker",
    "ContainerSource",
    "Delivery",
    "Destination",
    "EventObject",
    "Filter",
    "GitHubSource",
    "HasEvents",
    "IsoDurationError",
    "ObjectRef",
    "PingSource",
    "SecretKeyRef",
    "SinkBinding",
    "Trigger",
    "brokers",
    "cluster_event_problems",
    "event_object",
    "kubernetes_event_problems",
    "local_event_problems",
    "of_kind",
    "parse_iso8601_duration",
    "sources",
    "triggers",
]
