"""Knative Eventing documents (Broker, Trigger and the sources) read from the same files as Services: one
table row per rule, each with the message a user sees (file, document, field, rule)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from serving.container import Container
from serving.cron import schedule_problem
from serving.events import (
    Broker,
    ContainerSource,
    Delivery,
    Destination,
    EventObject,
    Filter,
    GitHubSource,
    IsoDurationError,
    ObjectRef,
    PingSource,
    SecretKeyRef,
    SinkBinding,
    Trigger,
    brokers,
    event_object,
    kubernetes_event_problems,
    local_event_problems,
    parse_iso8601_duration,
    sources,
    triggers,
)
from serving.service import ServiceFileError, load_manifests, parse_manifests
from tests.unit.serving.servicedoc import base_service, dump, with_field, write

HELLO = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "hello"}
HELLO_REF = ObjectRef(kind="Service", name="hello", namespace="default", api_version="serving.knative.dev/v1")
DEFAULT_BROKER = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}
CONTAINER = "spec.template.spec.containers"
DNS_SUBDOMAIN = (
    "is not a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', starting and ending with a letter "
    "or digit"
)
FILTER_NAME = (
    "is not a CloudEvents attribute name Knative filters on: lower-case letters and digits, starting with a "
    "letter"
)
ISO = "an ISO 8601 duration such as PT0.2S, PT1M30S or P1D"
DIALECTS = "expected exactly one of exact, prefix, suffix, all, any, not"


def base(kind: str) -> dict[str, Any]:
    """A minimal valid document of `kind` that also runs locally."""
    docs: dict[str, dict[str, Any]] = {
        "Broker": {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Broker",
            "metadata": {"name": "default"},
        },
        "Trigger": {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Trigger",
            "metadata": {"name": "orders"},
            "spec": {"broker": "default", "subscriber": {"ref": dict(HELLO)}},
        },
        "PingSource": {
            "apiVersion": "sources.knative.dev/v1",
            "kind": "PingSource",
            "metadata": {"name": "tick"},
            "spec": {"schedule": "*/5 * * * *", "sink": {"ref": dict(DEFAULT_BROKER)}},
        },
        "SinkBinding": {
            "apiVersion": "sources.knative.dev/v1",
            "kind": "SinkBinding",
            "metadata": {"name": "bind"},
            "spec": {"subject": dict(HELLO), "sink": {"uri": "http://127.0.0.1:9000/events"}},
        },
        "ContainerSource": {
            "apiVersion": "sources.knative.dev/v1",
            "kind": "ContainerSource",
            "metadata": {"name": "heartbeat"},
            "spec": {
                "template": {"spec": {"containers": [{"image": "example/beat", "command": ["./beat"]}]}},
                "sink": {"ref": dict(HELLO)},
            },
        },
        "GitHubSource": {
            "apiVersion": "sources.knative.dev/v1alpha1",
            "kind": "GitHubSource",
            "metadata": {"name": "repo"},
            "spec": {
                "ownerAndRepository": "knative/eventing",
                "eventTypes": ["push"],
                "secretToken": {"secretKeyRef": {"name": "github", "key": "webhook"}},
                "sink": {"ref": dict(HELLO)},
            },
        },
    }
    return docs[kind]


def changed(kind: str, path: str, value: object) -> dict[str, Any]:
    """The base document of `kind` with one field changed, or several when `path` is `*`."""
    if path != "*":
        return with_field(base(kind), path, value)
    doc = base(kind)
    assert isinstance(value, list)
    for sub_path, sub_value in value:
        doc = with_field(doc, sub_path, sub_value)
    return doc


def only(tmp_path: Path, doc: dict[str, Any]) -> EventObject:
    [obj] = load_manifests([write(tmp_path, "events.yaml", doc)]).events
    return obj


def problems(tmp_path: Path, *docs: dict[str, Any]) -> list[str]:
    with pytest.raises(ServiceFileError) as caught:
        load_manifests([write(tmp_path, "events.yaml", *docs)])
    return caught.value.problems


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


VALID = [
    pytest.param(
        base("Broker"),
        {"broker_class": "MTChannelBasedBroker", "config": None, "delivery": None, "namespace": "default"},
        id="broker-defaults",
    ),
    pytest.param(
        changed(
            "Broker",
            "*",
            [
                ("metadata.namespace", "shop"),
                ("metadata.annotations", {"eventing.knative.dev/broker.class": "Kafka"}),
                ("spec.config", {"apiVersion": "v1", "kind": "ConfigMap", "name": "kafka-broker-config"}),
            ],
        ),
        {
            "broker_class": "Kafka",
            "namespace": "shop",
            "config": ObjectRef(
                kind="ConfigMap", name="kafka-broker-config", namespace="shop", api_version="v1"
            ),
        },
        id="broker-kafka-config-defaults-to-its-namespace",
    ),
    pytest.param(
        changed(
            "Broker",
            "spec.delivery",
            {
                "retry": 3,
                "backoffPolicy": "linear",
                "backoffDelay": "PT0.2S",
                "timeout": "PT1M",
                "format": "binary",
                "deadLetterSink": {"ref": dict(HELLO), "uri": "/dead"},
            },
        ),
        {
            "delivery": Delivery(
                retry=3,
                backoff_policy="linear",
                backoff_delay=0.2,
                timeout=60.0,
                dead_letter_sink=Destination(ref=HELLO_REF, uri="/dead"),
                format="binary",
            )
        },
        id="broker-delivery",
    ),
    pytest.param(
        base("Trigger"),
        {
            "broker": "default",
            "subscriber": Destination(ref=HELLO_REF),
            "filters": (),
            "filter_attributes": {},
        },
        id="trigger-minimal",
    ),
    pytest.param(
        changed(
            "Trigger",
            "*",
            [
                ("spec.filter", {"attributes": {"type": "order.created", "source": ""}}),
                ("spec.subscriber", {"uri": "https://hooks.example.com/orders"}),
            ],
        ),
        {
            "filter_attributes": {"type": "order.created", "source": ""},
            "subscriber": Destination(uri="https://hooks.example.com/orders"),
        },
        id="trigger-filter-attributes-and-uri",
    ),
    pytest.param(
        changed(
            "Trigger",
            "spec.filters",
            [
                {"exact": {"type": "order.created"}},
                {"any": [{"prefix": {"source": "/shop/"}}, {"suffix": {"subject": ".pdf"}}]},
                {"not": {"exact": {"priority": "low"}}},
                {"all": [{"exact": {"a": "1", "b": "2"}}]},
            ],
        ),
        {
            "filters": (
                Filter("exact", {"type": "order.created"}),
                Filter(
                    "any",
                    children=(Filter("prefix", {"source": "/shop/"}), Filter("suffix", {"subject": ".pdf"})),
                ),
                Filter("not", children=(Filter("exact", {"priority": "low"}),)),
                Filter("all", children=(Filter("exact", {"a": "1", "b": "2"}),)),
            )
        },
        id="trigger-filters",
    ),
    pytest.param(
        changed(
            "PingSource",
            "*",
            [
                ("spec.timezone", "Europe/Paris"),
                ("spec.contentType", "application/json"),
                ("spec.data", '{"message": "hello"}'),
                ("spec.ceOverrides", {"extensions": {"team": "shop", "v2": "yes"}}),
            ],
        ),
        {
            "schedule": "*/5 * * * *",
            "timezone": "Europe/Paris",
            "content_type": "application/json",
            "data": b'{"message": "hello"}',
            "ce_overrides": {"team": "shop", "v2": "yes"},
            "sink": Destination(
                ref=ObjectRef(
                    kind="Broker", name="default", namespace="default", api_version="eventing.knative.dev/v1"
                )
            ),
        },
        id="ping-source-json-data",
    ),
    pytest.param(
        changed("PingSource", "spec.dataBase64", b64(b"\x00\x01binary")),
        {"data": b"\x00\x01binary", "timezone": None, "content_type": None},
        id="ping-source-base64-data",
    ),
    pytest.param(
        base("SinkBinding"),
        {"subject": HELLO_REF, "sink": Destination(uri="http://127.0.0.1:9000/events"), "ce_overrides": {}},
        id="sink-binding",
    ),
    pytest.param(
        base("ContainerSource"),
        {"sink": Destination(ref=HELLO_REF), "extra_containers": ()},
        id="container-source",
    ),
    pytest.param(
        changed(
            "GitHubSource",
            "*",
            [
                ("spec.eventTypes", ["push", "pull_request"]),
                ("spec.accessToken", {"secretKeyRef": {"name": "github", "key": "token"}}),
                ("spec.githubAPIURL", "https://ghe.example.com/api/v3/"),
                ("spec.secure", True),
            ],
        ),
        {
            "owner_and_repository": "knative/eventing",
            "event_types": ("push", "pull_request"),
            "secret_token": SecretKeyRef(name="github", key="webhook"),
            "access_token": SecretKeyRef(name="github", key="token"),
            "github_api_url": "https://ghe.example.com/api/v3/",
            "secure": True,
        },
        id="github-source",
    ),
]


@pytest.mark.parametrize(("doc", "expected"), VALID)
def test_a_valid_document_reads_as_knative_defaults_it(
    tmp_path: Path, doc: dict[str, Any], expected: dict[str, object]
) -> None:
    obj = only(tmp_path, doc)

    assert type(obj).__name__ == doc["kind"]
    assert obj.name == doc["metadata"]["name"]
    assert obj.source == tmp_path / "events.yaml"
    assert {key: getattr(obj, key) for key in expected} == expected


def test_a_container_source_runs_the_container_a_service_would(tmp_path: Path) -> None:
    obj = only(
        tmp_path, changed("ContainerSource", f"{CONTAINER}[0].env", [{"name": "TARGET", "value": "x"}])
    )

    assert isinstance(obj, ContainerSource)
    assert obj.base_dir == tmp_path
    assert obj.container == Container(
        image="example/beat",
        command=("./beat",),
        args=(),
        env=(("TARGET", "x"),),
        port=8080,
        readiness_probe=None,
        working_dir=None,
        name="heartbeat-0",
    )


INVALID = [
    # every kind: the envelope
    pytest.param(
        "Broker",
        "apiVersion",
        "eventing.knative.dev/v1beta1",
        "apiVersion",
        "must be 'eventing.knative.dev/v1', not 'eventing.knative.dev/v1beta1'",
        id="broker-api-version",
    ),
    pytest.param(
        "PingSource",
        "apiVersion",
        "sources.knative.dev/v1beta2",
        "apiVersion",
        "must be 'sources.knative.dev/v1', not 'sources.knative.dev/v1beta2'",
        id="ping-api-version",
    ),
    pytest.param(
        "GitHubSource",
        "apiVersion",
        "sources.knative.dev/v1",
        "apiVersion",
        "must be 'sources.knative.dev/v1alpha1', not 'sources.knative.dev/v1'",
        id="github-api-version",
    ),
    pytest.param("Trigger", "spec.brokr", "default", "spec.brokr", "unknown field", id="unknown-spec-field"),
    pytest.param(
        "Broker",
        "metadata.name",
        "Default",
        "metadata.name",
        f"'Default' {DNS_SUBDOMAIN}",
        id="name-not-dns1123-subdomain",
    ),
    pytest.param("Trigger", "metadata.name!", None, "metadata.name", "required", id="name-missing"),
    pytest.param(
        "SinkBinding",
        "metadata.generateName",
        "bind-",
        "metadata.generateName",
        "not supported: give the SinkBinding a `name`",
        id="generate-name",
    ),
    pytest.param(
        "Trigger",
        "metadata.labels",
        {"team": "a b"},
        "metadata.labels.team",
        "'a b' is not a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending "
        "with a letter or digit",
        id="label-value",
    ),
    pytest.param(
        "Trigger", "spec", ["broker"], "spec", "must be a mapping, not a list", id="spec-not-mapping"
    ),
    # Broker
    pytest.param(
        "Broker",
        "metadata.annotations",
        {"eventing.knative.dev/broker.class": "Kafka"},
        "spec.config",
        "required for the Kafka class: a v1 ConfigMap with bootstrap.servers (Knative's Kafka broker "
        "reads it)",
        id="kafka-needs-config",
    ),
    pytest.param(
        "Broker",
        "*",
        [
            ("metadata.annotations", {"eventing.knative.dev/broker.class": "Kafka"}),
            ("spec.config", {"apiVersion": "v1", "kind": "Secret", "name": "kafka"}),
        ],
        "spec.config",
        "the Kafka class reads a v1 ConfigMap, not v1 Secret",
        id="kafka-config-not-configmap",
    ),
    pytest.param(
        "Broker",
        "spec.config",
        {"kind": "ConfigMap", "name": "c"},
        "spec.config.apiVersion",
        "required",
        id="config-api-version-missing",
    ),
    pytest.param(
        "Broker",
        "spec.config",
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "group": "x"},
        "spec.config.group",
        "not allowed: needs Knative's feature flag kreference-group (off by default)",
        id="config-group",
    ),
    # Delivery
    pytest.param(
        "Broker",
        "spec.delivery.retry",
        -1,
        "spec.delivery.retry",
        "-1 is out of range: must be 0-2147483647 (0 or more)",
        id="retry-negative",
    ),
    pytest.param(
        "Broker",
        "spec.delivery.retry",
        "3",
        "spec.delivery.retry",
        "must be an integer, not a string",
        id="retry-string",
    ),
    pytest.param(
        "Trigger",
        "spec.delivery.backoffPolicy",
        "random",
        "spec.delivery.backoffPolicy",
        "'random' is not exponential or linear",
        id="backoff-policy",
    ),
    pytest.param(
        "Trigger",
        "spec.delivery.backoffDelay",
        "200ms",
        "spec.delivery.backoffDelay",
        f"'200ms' is not {ISO}",
        id="backoff-delay-go-duration",
    ),
    pytest.param(
        "Trigger",
        "spec.delivery.backoffDelay",
        "P1M",
        "spec.delivery.backoffDelay",
        f"'P1M': years and months have no fixed length; write days, e.g. P30D ({ISO})",
        id="backoff-delay-months",
    ),
    pytest.param(
        "Trigger",
        "spec.delivery.timeout",
        "PT0S",
        "spec.delivery.timeout",
        "must be longer than zero",
        id="timeout-zero",
    ),
    pytest.param(
        "Trigger",
        "spec.delivery.timeout",
        "PT",
        "spec.delivery.timeout",
        f"'PT' is not {ISO}: it names no amount after P or T",
        id="timeout-empty",
    ),
    pytest.param(
        "Trigger",
        "spec.delivery.format",
        "xml",
        "spec.delivery.format",
        "'xml' is not json or binary",
        id="delivery-format",
    ),
    pytest.param(
        "Trigger",
        "spec.delivery.retryAfterMax",
        "PT1M",
        "spec.delivery.retryAfterMax",
        "not allowed: needs Knative's feature flag delivery-retryafter (off by default)",
        id="retry-after-max",
    ),
    pytest.param(
        "Broker",
        "spec.delivery.deadLetterSink",
        {},
        "spec.delivery.deadLetterSink",
        "expected a ref or a uri (or both), got neither",
        id="dead-letter-sink-empty",
    ),
    # Destination
    pytest.param(
        "Trigger",
        "spec.subscriber!",
        None,
        "spec.subscriber",
        "required: where events go, a `ref` to an object or a `uri`",
        id="subscriber-missing",
    ),
    pytest.param(
        "Trigger",
        "spec.subscriber",
        {"uri": "/orders"},
        "spec.subscriber.uri",
        "'/orders' is not an absolute http(s) URL: without a ref, uri is the whole address",
        id="uri-relative-without-ref",
    ),
    pytest.param(
        "Trigger",
        "spec.subscriber",
        {"uri": "ftp://files.example.com/x"},
        "spec.subscriber.uri",
        "'ftp://files.example.com/x' is not an absolute http(s) URL: without a ref, uri is the whole address",
        id="uri-not-http",
    ),
    pytest.param(
        "Trigger",
        "spec.subscriber.uri",
        "http://other/x",
        "spec.subscriber.uri",
        "'http://other/x' is absolute: beside a ref, uri is a path relative to the ref's address (such "
        "as /events), as Knative requires",
        id="uri-absolute-beside-ref",
    ),
    pytest.param(
        "Trigger",
        "spec.subscriber.ref",
        {"apiVersion": "serving.knative.dev/v1", "name": "hello"},
        "spec.subscriber.ref.kind",
        "required",
        id="ref-kind-missing",
    ),
    pytest.param(
        "Trigger",
        "spec.subscriber.CACerts",
        "pem",
        "spec.subscriber.CACerts",
        "not supported here: events go over plain HTTP, or HTTPS with the system's CAs",
        id="ca-certs",
    ),
    # Trigger
    pytest.param(
        "Trigger",
        "spec.broker!",
        None,
        "spec.broker",
        "required: the name of a Broker in the Trigger's namespace",
        id="broker-missing",
    ),
    pytest.param(
        "Trigger", "spec.broker", "My_Broker", "spec.broker", f"'My_Broker' {DNS_SUBDOMAIN}", id="broker-name"
    ),
    pytest.param(
        "Trigger",
        "spec.brokerRef",
        {"name": "default"},
        "spec.brokerRef",
        "not supported here: name the Broker in `broker`",
        id="broker-ref",
    ),
    pytest.param(
        "Trigger",
        "spec.filter.attributes",
        {"Type": "x"},
        "spec.filter.attributes.Type",
        f"'Type' {FILTER_NAME}",
        id="filter-attribute-upper-case",
    ),
    pytest.param(
        "Trigger",
        "spec.filter.attributes",
        {"1type": "x"},
        "spec.filter.attributes.1type",
        f"'1type' {FILTER_NAME}",
        id="filter-attribute-starts-with-digit",
    ),
    pytest.param(
        "Trigger",
        "spec.filter.attributes",
        {"type": 1},
        "spec.filter.attributes.type",
        'value must be a string, not a number (quote it: "1")',
        id="filter-attribute-not-string",
    ),
    pytest.param(
        "Trigger", "spec.filter.source", "x", "spec.filter.source", "unknown field", id="filter-unknown-field"
    ),
    pytest.param("Trigger", "spec.filters", [{}], "spec.filters[0]", DIALECTS, id="filters-empty-filter"),
    pytest.param(
        "Trigger",
        "spec.filters",
        [{"exact": {"type": "a"}, "prefix": {"source": "b"}}],
        "spec.filters[0]",
        f"{DIALECTS}; got exact, prefix",
        id="filters-two-dialects",
    ),
    pytest.param(
        "Trigger",
        "spec.filters",
        [{"prefix": {"source": ""}}],
        "spec.filters[0].prefix.source",
        "must not be empty: it would match every value",
        id="filters-empty-prefix",
    ),
    pytest.param(
        "Trigger",
        "spec.filters",
        [{"suffix": {}}],
        "spec.filters[0].suffix",
        "must name at least one attribute",
        id="filters-no-attribute",
    ),
    pytest.param(
        "Trigger",
        "spec.filters",
        [{"all": []}],
        "spec.filters[0].all",
        "must hold at least one filter",
        id="filters-all-empty",
    ),
    pytest.param(
        "Trigger",
        "spec.filters",
        [{"any": [{"exact": {"Type": "a"}}]}],
        "spec.filters[0].any[0].exact.Type",
        f"'Type' {FILTER_NAME}",
        id="filters-nested-attribute",
    ),
    pytest.param(
        "Trigger",
        "spec.filters",
        [{"not": {"not": {}}}],
        "spec.filters[0].not.not",
        DIALECTS,
        id="filters-nested-not",
    ),
    pytest.param(
        "Trigger",
        "spec.filters",
        [{"cesql": "type = 'a'"}],
        "spec.filters[0].cesql",
        "not supported here: use exact, prefix, suffix, all, any and not",
        id="filters-cesql",
    ),
    # PingSource
    pytest.param(
        "PingSource",
        "spec.schedule!",
        None,
        "spec.schedule",
        "required: a cron schedule such as '*/5 * * * *'",
        id="schedule-missing",
    ),
    pytest.param(
        "PingSource",
        "spec.timezone",
        "Mars/Olympus",
        "spec.timezone",
        "'Mars/Olympus' is not an IANA time zone name, such as Europe/Paris or UTC",
        id="timezone",
    ),
    pytest.param(
        "PingSource",
        "*",
        [("spec.data", "a"), ("spec.dataBase64", "YQ==")],
        "spec",
        "may not have both data and dataBase64",
        id="data-and-base64",
    ),
    pytest.param(
        "PingSource",
        "spec.dataBase64",
        "not base64!",
        "spec.dataBase64",
        "not valid base64 (standard alphabet, padded with '='); write plain text in data",
        id="data-base64-invalid",
    ),
    pytest.param(
        "PingSource",
        "*",
        [("spec.contentType", "application/json"), ("spec.data", "[1, 2]")],
        "spec.data",
        "not a JSON object, as contentType application/json requires",
        id="data-not-json",
    ),
    pytest.param(
        "PingSource",
        "*",
        [("spec.contentType", "application/json"), ("spec.dataBase64", b64(b"{"))],
        "spec.dataBase64",
        "not a JSON object, as contentType application/json requires",
        id="data-base64-not-json",
    ),
    pytest.param(
        "PingSource",
        "spec.sink!",
        None,
        "spec.sink",
        "required: where events go, a `ref` to an object or a `uri`",
        id="ping-sink-missing",
    ),
    pytest.param(
        "PingSource",
        "spec.ceOverrides.extensions",
        {"Team": "a"},
        "spec.ceOverrides.extensions.Team",
        "'Team' is not a CloudEvents attribute name: lower-case letters and digits only",
        id="overrides-upper-case",
    ),
    pytest.param(
        "PingSource",
        "spec.ceOverrides.extensions",
        {"type": "a"},
        "spec.ceOverrides.extensions.type",
        "'type' is a CloudEvents context attribute the source sets itself, not an extension",
        id="overrides-reserved",
    ),
    pytest.param(
        "PingSource",
        "spec.ceOverrides.extension",
        {"a": "b"},
        "spec.ceOverrides.extension",
        "unknown field",
        id="overrides-unknown-field",
    ),
    # SinkBinding
    pytest.param(
        "SinkBinding",
        "spec.subject!",
        None,
        "spec.subject",
        "required: the workload to bind (apiVersion, kind and name or selector)",
        id="subject-missing",
    ),
    pytest.param(
        "SinkBinding",
        "spec.subject",
        {"apiVersion": "apps/v1", "kind": "Deployment"},
        "spec.subject.name",
        "required: the workload's name, or a `selector`",
        id="subject-unnamed",
    ),
    pytest.param(
        "SinkBinding",
        "spec.subject",
        {"apiVersion": "apps/v1", "kind": "Deployment", "selector": {"matchExpressions": [{"key": "a"}]}},
        "spec.subject.selector.matchExpressions[0].operator",
        "required: In or NotIn or Exists or DoesNotExist",
        id="subject-selector-operator",
    ),
    pytest.param(
        "SinkBinding",
        "spec.subject.namespace",
        "other",
        "spec.subject.namespace",
        "must be the SinkBinding's own namespace 'default' (Knative rule)",
        id="subject-namespace",
    ),
    pytest.param(
        "SinkBinding",
        "spec.subject.kind",
        "Service!",
        "spec.subject.kind",
        "'Service!' is not a kind: letters, digits and '_', not starting with a digit",
        id="subject-kind",
    ),
    pytest.param(
        "SinkBinding",
        "spec.sink",
        {"uri": "127.0.0.1:9000"},
        "spec.sink.uri",
        "'127.0.0.1:9000' is not an absolute http(s) URL: without a ref, uri is the whole address",
        id="binding-sink-uri",
    ),
    # ContainerSource
    pytest.param(
        "ContainerSource",
        "spec.template!",
        None,
        f"{CONTAINER}",
        "required: at least one container",
        id="containers-missing",
    ),
    pytest.param(
        "ContainerSource",
        f"{CONTAINER}[0].imagee",
        "x",
        f"{CONTAINER}[0].imagee",
        "unknown field",
        id="container-unknown-field",
    ),
    pytest.param(
        "ContainerSource",
        f"{CONTAINER}[0].image",
        "Example/Beat",
        f"{CONTAINER}[0].image",
        "'Example/Beat' is not an image reference: [registry/]repository[:tag][@sha256:digest] with a "
        "lower-case repository",
        id="container-image",
    ),
    pytest.param(
        "ContainerSource",
        f"{CONTAINER}[1]",
        {"name": "heartbeat-0", "image": "example/b"},
        f"{CONTAINER}[1].name",
        "'heartbeat-0' is already the name of containers[0]",
        id="container-names-unique",
    ),
    pytest.param(
        "ContainerSource",
        "spec.template.spec.nodeSelector",
        {"a": "b"},
        "spec.template.spec.nodeSelector",
        "not supported here: a ContainerSource takes automountServiceAccountToken, containers, "
        "enableServiceLinks, imagePullSecrets, serviceAccountName, volumes",
        id="pod-field",
    ),
    pytest.param(
        "ContainerSource",
        "spec.sink!",
        None,
        "spec.sink",
        "required: where events go, a `ref` to an object or a `uri`",
        id="container-sink-missing",
    ),
    # GitHubSource
    pytest.param(
        "GitHubSource",
        "spec.ownerAndRepository",
        "knative",
        "spec.ownerAndRepository",
        "'knative' is not owner/repository, such as knative/eventing",
        id="github-repository",
    ),
    pytest.param(
        "GitHubSource",
        "spec.ownerAndRepository!",
        None,
        "spec.ownerAndRepository",
        "required: the repository, as owner/repository",
        id="github-repository-missing",
    ),
    pytest.param(
        "GitHubSource",
        "spec.eventTypes",
        [],
        "spec.eventTypes",
        "required: at least one GitHub event, such as push or pull_request",
        id="github-no-events",
    ),
    pytest.param(
        "GitHubSource",
        "spec.eventTypes",
        ["push", "pushed"],
        "spec.eventTypes[1]",
        "'pushed' is not a GitHub webhook event GitHubSource accepts, such as push",
        id="github-event-type",
    ),
    pytest.param(
        "GitHubSource",
        "spec.secretToken!",
        None,
        "spec.secretToken",
        "required: the Secret key holding the webhook secret",
        id="github-secret-missing",
    ),
    pytest.param(
        "GitHubSource",
        "spec.secretToken.secretKeyRef.key!",
        None,
        "spec.secretToken.secretKeyRef.key",
        "required",
        id="github-secret-key-missing",
    ),
    pytest.param(
        "GitHubSource",
        "spec.accessToken.secretKeyRef",
        {"name": "Git Hub", "key": "t"},
        "spec.accessToken.secretKeyRef.name",
        f"'Git Hub' {DNS_SUBDOMAIN}",
        id="github-access-name",
    ),
    pytest.param(
        "GitHubSource",
        "spec.githubAPIURL",
        "ghe.example.com",
        "spec.githubAPIURL",
        "'ghe.example.com' is not an absolute http(s) URL: without a ref, uri is the whole address",
        id="github-api-url",
    ),
    pytest.param(
        "GitHubSource",
        "spec.secure",
        "yes",
        "spec.secure",
        "must be true or false, not a string",
        id="github-secure",
    ),
]


@pytest.mark.parametrize(("kind", "path", "value", "field", "rule"), INVALID)
def test_each_rule_is_reported_with_file_document_field_and_rule(
    tmp_path: Path, kind: str, path: str, value: object, field: str, rule: str
) -> None:
    doc = changed(kind, path, value)
    name = doc["metadata"].get("name", "?")

    assert problems(tmp_path, doc) == [
        f"{tmp_path / 'events.yaml'}: document 1 ({kind}/{name}): {field}: {rule}"
    ]


def test_an_invalid_schedule_is_reported_as_serving_cron_reads_it(tmp_path: Path) -> None:
    rule = schedule_problem("every minute")
    assert rule is not None

    assert problems(tmp_path, changed("PingSource", "spec.schedule", "every minute")) == [
        f"{tmp_path / 'events.yaml'}: document 1 (PingSource/tick): spec.schedule: {rule}"
    ]


def test_every_problem_of_every_document_is_reported_at_once(tmp_path: Path) -> None:
    trigger = changed(
        "Trigger",
        "*",
        [("spec.broker!", None), ("spec.subscriber", {"uri": "/x"}), ("spec.delivery.retry", -2)],
    )
    ping = changed("PingSource", "*", [("spec.timezone", "Nowhere"), ("spec.sink!", None)])
    source = tmp_path / "events.yaml"

    assert problems(tmp_path, base("Broker"), trigger, ping) == [
        f"{source}: document 2 (Trigger/orders): spec.broker: required: the name of a Broker in the "
        "Trigger's "
        "namespace",
        f"{source}: document 2 (Trigger/orders): spec.subscriber.uri: '/x' is not an absolute http(s) URL: "
        "without a ref, uri is the whole address",
        f"{source}: document 2 (Trigger/orders): spec.delivery.retry: -2 is out of range: must be "
        "0-2147483647 "
        "(0 or more)",
        f"{source}: document 3 (PingSource/tick): spec.timezone: 'Nowhere' is not an IANA time zone name, "
        "such "
        "as Europe/Paris or UTC",
        f"{source}: document 3 (PingSource/tick): spec.sink: required: where events go, a `ref` to an "
        "object or "
        "a `uri`",
    ]


def test_status_is_ignored_as_for_a_service(tmp_path: Path) -> None:
    doc = with_field(base("Broker"), "status", {"address": {"url": "http://broker"}, "conditions": []})

    assert isinstance(only(tmp_path, doc), Broker)


def test_a_file_mixing_services_configs_and_eventing_loads_all(tmp_path: Path) -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}}
    path = write(tmp_path, "app.yaml", base_service(), config, base("Broker"), base("Trigger"))

    manifests = load_manifests([path])

    assert [s.name for s in manifests.services] == ["hello"]
    assert [c.name for c in manifests.configs] == ["settings"]
    assert [(type(o).__name__, o.name, o.document) for o in manifests.events] == [
        ("Broker", "default", 3),
        ("Trigger", "orders", 4),
    ]
    [broker] = brokers(manifests)
    assert [t.name for t in triggers(manifests, broker)] == ["orders"]


def test_accessors_pick_one_kind_in_file_order(tmp_path: Path) -> None:
    other = with_field(base("Trigger"), "metadata.name", "other-broker")
    other = with_field(other, "spec.broker", "other")
    path = write(
        tmp_path, "e.yaml", base("PingSource"), base("Trigger"), base("Broker"), other, base("SinkBinding")
    )

    manifests = load_manifests([path])

    [broker] = brokers(manifests)
    assert [t.name for t in triggers(manifests)] == ["orders", "other-broker"]
    assert [t.name for t in triggers(manifests, broker)] == ["orders"]
    assert [type(s).__name__ for s in sources(manifests)] == ["PingSource", "SinkBinding"]


def test_an_eventing_object_defined_twice_names_both_places(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", base("Broker"), base("Trigger"))
    second = write(
        tmp_path, "b.yaml", base("Trigger"), with_field(base("Broker"), "metadata.namespace", "shop")
    )

    with pytest.raises(ServiceFileError) as caught:
        load_manifests([first, second])

    assert caught.value.problems == [
        f"{second}: document 1 (Trigger/orders): metadata.name: Trigger default/orders is already defined in "
        f"{first} document 2"
    ]


def test_a_broker_and_a_service_may_share_a_name(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", base_service("default"), base("Broker"))

    manifests = load_manifests([path])

    assert [s.name for s in manifests.services] == [o.name for o in manifests.events] == ["default"]


def test_texts_sent_by_apply_hold_eventing_objects_too(tmp_path: Path) -> None:
    manifests = parse_manifests(
        [(tmp_path / "sent.yaml", dump(base("GitHubSource"), base("ContainerSource")))]
    )

    assert [type(o) for o in manifests.events] == [GitHubSource, ContainerSource]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", "no Service, ConfigMap, Secret or Eventing documents in this file", id="empty-file"),
        pytest.param(
            "apiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata:\n  name: c\n",
            "document 1 (Channel/c): kind: 'Channel' is not supported: a file may hold "
            "serving.knative.dev/v1 "
            "Service, v1 ConfigMap and Secret, eventing.knative.dev/v1 Broker and Trigger, "
            "sources.knative.dev/v1 "
            "PingSource, SinkBinding and ContainerSource, sources.knative.dev/v1alpha1 GitHubSource "
            "documents",
            id="other-eventing-kind",
        ),
    ],
)
def test_file_level_messages_name_the_eventing_kinds(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "e.yaml"
    path.write_text(text)

    with pytest.raises(ServiceFileError) as caught:
        load_manifests([path])

    assert caught.value.problems == [f"{path}: {expected}"]


def test_event_object_reads_one_document_and_records_its_problems(tmp_path: Path) -> None:
    problems: list[str] = []
    source = tmp_path / "e.yaml"

    good = event_object(base("SinkBinding"), source, 4, problems)
    bad = event_object(with_field(base("Trigger"), "spec.broker!", None), source, 5, problems)

    assert isinstance(good, SinkBinding)
    assert good.where == f"{source}: document 4 (SinkBinding/bind)"
    assert bad is None
    assert problems == [
        f"{source}: document 5 (Trigger/orders): spec.broker: required: the name of a Broker in the "
        "Trigger's "
        "namespace"
    ]


LOCAL_ONLY = "the kinds the local platform resolves"
LOCAL = [
    pytest.param(
        "Broker",
        "metadata.annotations",
        {"eventing.knative.dev/broker.class": "RabbitMQBroker"},
        "metadata.annotations[eventing.knative.dev/broker.class]",
        "'RabbitMQBroker' is not supported locally: the broker classes here are MTChannelBasedBroker (an "
        "embedded durable store) and Kafka",
        id="broker-class",
    ),
    pytest.param(
        "Trigger",
        "spec.subscriber.ref",
        {"apiVersion": "v1", "kind": "Service", "name": "hello"},
        "spec.subscriber.ref",
        f"v1 Service 'hello' is not supported locally: a subscriber here must be a serving.knative.dev/v1 "
        f"Service, {LOCAL_ONLY}",
        id="subscriber-kubernetes-service",
    ),
    pytest.param(
        "Trigger",
        "spec.delivery.deadLetterSink.ref",
        dict(DEFAULT_BROKER),
        "spec.delivery.deadLetterSink.ref",
        "eventing.knative.dev/v1 Broker 'default' is not supported locally: a dead-letter sink here must be "
        "a "
        f"serving.knative.dev/v1 Service, {LOCAL_ONLY}",
        id="dead-letter-sink-broker",
    ),
    pytest.param(
        "PingSource",
        "spec.sink.ref",
        {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "name": "c"},
        "spec.sink.ref",
        "messaging.knative.dev/v1 Channel 'c' is not supported locally: a sink here must be a "
        f"serving.knative.dev/v1 Service or eventing.knative.dev/v1 Broker, {LOCAL_ONLY}",
        id="sink-channel",
    ),
    pytest.param(
        "SinkBinding",
        "spec.subject",
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"},
        "spec.subject",
        "apps/v1 Deployment 'worker' is not supported locally: a subject here must be a "
        f"serving.knative.dev/v1 Service, {LOCAL_ONLY}",
        id="subject-deployment",
    ),
    pytest.param(
        "SinkBinding",
        "spec.subject",
        {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "selector": {"matchLabels": {"app": "a"}},
        },
        "spec.subject.selector",
        "is not supported locally: name the subject (`name`) instead of selecting it by labels",
        id="subject-selector",
    ),
    pytest.param(
        "ContainerSource",
        f"{CONTAINER}[1]",
        {"image": "example/b", "command": ["b"]},
        f"{CONTAINER}",
        "2 containers: the local platform runs one per ContainerSource",
        id="two-containers",
    ),
    pytest.param(
        "ContainerSource",
        f"{CONTAINER}[0].command!",
        None,
        f"{CONTAINER}[0].command",
        "required locally with --runtime process: a ContainerSource's container runs as a process then; "
        "add a `command`, or run its image with --runtime auto, podman or docker",
        id="source-command",
    ),
]


@pytest.mark.parametrize(("kind", "path", "value", "field", "rule"), LOCAL)
def test_local_problems_are_separate_from_knative_validation(
    tmp_path: Path, kind: str, path: str, value: object, field: str, rule: str
) -> None:
    doc = changed(kind, path, value)
    obj = only(tmp_path, doc)

    assert local_event_problems(obj) == [f"{obj.where}: {field}: {rule}"]


def test_valid_documents_run_locally(tmp_path: Path) -> None:
    kinds = ("Broker", "Trigger", "PingSource", "SinkBinding", "ContainerSource", "GitHubSource")
    manifests = load_manifests([write(tmp_path, "e.yaml", *(base(k) for k in kinds))])

    assert [p for obj in manifests.events for p in local_event_problems(obj)] == []


def test_a_container_source_run_from_its_image_needs_no_command(tmp_path: Path) -> None:
    obj = only(tmp_path, changed("ContainerSource", f"{CONTAINER}[0].command!", None))

    assert local_event_problems(obj, container=True) == []


def test_kubernetes_needs_images_and_the_github_access_token(tmp_path: Path) -> None:
    source = only(tmp_path, changed("ContainerSource", f"{CONTAINER}[0].image!", None))
    github = only(tmp_path, base("GitHubSource"))

    assert kubernetes_event_problems(source) == [
        f"{source.where}: {CONTAINER}[0].image: required on Kubernetes"
    ]
    assert kubernetes_event_problems(github) == [
        f"{github.where}: spec.accessToken: required on Kubernetes: the source registers its webhook"
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("PT0.2S", 0.2, id="fraction-of-second"),
        pytest.param("PT0,5S", 0.5, id="comma-fraction"),
        pytest.param("PT1M", 60.0, id="minute"),
        pytest.param("PT1M30S", 90.0, id="minute-and-seconds"),
        pytest.param("PT1.5H", 5400.0, id="fraction-of-hour"),
        pytest.param("P1DT12H", 129600.0, id="day-and-hours"),
        pytest.param("P2W", 1209600.0, id="weeks"),
        pytest.param("PT0S", 0.0, id="zero"),
    ],
)
def test_iso8601_durations_read_as_seconds(text: str, seconds: float) -> None:
    assert parse_iso8601_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("", f"'' is not {ISO}", id="empty"),
        pytest.param("P", f"'P' is not {ISO}: it names no amount after P or T", id="p-alone"),
        pytest.param("P1DT", f"'P1DT' is not {ISO}: it names no amount after P or T", id="t-alone"),
        pytest.param("PT1S1M", f"'PT1S1M' is not {ISO}", id="out-of-order"),
        pytest.param("-PT1S", f"'-PT1S' is not {ISO}", id="negative"),
        pytest.param("pt1s", f"'pt1s' is not {ISO}", id="lower-case"),
        pytest.param("1S", f"'1S' is not {ISO}", id="no-p"),
        pytest.param(
            "P1Y", f"'P1Y': years and months have no fixed length; write days, e.g. P30D ({ISO})", id="years"
        ),
        pytest.param(
            "PT1.5M30S",
            f"'PT1.5M30S': only the last amount may have a fraction ({ISO})",
            id="fraction-not-last",
        ),
    ],
)
def test_iso8601_durations_are_strict(text: str, reason: str) -> None:
    with pytest.raises(IsoDurationError) as caught:
        parse_iso8601_duration(text)

    assert str(caught.value) == reason


def test_a_trigger_with_filters_keeps_the_broker_and_subscriber(tmp_path: Path) -> None:
    obj = only(tmp_path, changed("Trigger", "spec.filters", [{"exact": {"type": "a"}}]))

    assert obj == Trigger(
        kind="Trigger",
        name="orders",
        namespace="default",
        source=tmp_path / "events.yaml",
        broker="default",
        filters=(Filter("exact", {"type": "a"}),),
        subscriber=Destination(ref=HELLO_REF),
    )


def test_a_ping_source_without_data_sends_none(tmp_path: Path) -> None:
    obj = only(tmp_path, base("PingSource"))

    assert isinstance(obj, PingSource)
    assert obj.data == b""
    assert obj.ce_overrides == {}


def test_the_timezone_and_the_schedule_are_read_together_as_knative_does(tmp_path: Path) -> None:
    doc = changed(
        "PingSource", "*", [("spec.schedule", "CRON_TZ=UTC 0 9 * * *"), ("spec.timezone", "Asia/Tokyo")]
    )
    rule = schedule_problem("CRON_TZ=UTC 0 9 * * *", "Asia/Tokyo")
    assert rule is not None

    assert problems(tmp_path, doc) == [
        f"{tmp_path / 'events.yaml'}: document 1 (PingSource/tick): spec.schedule: {rule}"
    ]
    fixed = only(tmp_path, with_field(doc, "spec.schedule", "0 9 * * *"))
    assert isinstance(fixed, PingSource)
    assert (fixed.schedule, fixed.timezone) == ("0 9 * * *", "Asia/Tokyo")
