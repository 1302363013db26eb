"""Validation of Service documents as Knative's webhook would: one table row per rule, with its message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.duration import GRAMMAR
from serving.service import ServiceFileError, kubernetes_problems, local_problems, parse_documents
from tests.unit.serving.servicedoc import base_service, dump, with_field

C = "spec.template.spec.containers[0]"
T = "spec.template.spec"
DNS1035 = (
    "is not a DNS-1035 label: lower-case letters, digits and '-', "
    "starting with a letter and ending with a letter or digit"
)
QUALIFIED = "at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"


def problems(doc: dict[str, Any], source: Path) -> list[str]:
    with pytest.raises(ServiceFileError) as caught:
        parse_documents(dump(doc), source)
    return caught.value.problems


def probe(**fields: object) -> dict[str, object]:
    return dict(fields)


CONFIG_VOLUME = {"name": "settings", "configMap": {"name": "hello-settings"}}
CONFIG_MOUNT = {"name": "settings", "mountPath": "/etc/hello", "readOnly": True}


def changed(path: str, value: object) -> dict[str, Any]:
    """The base Service with one field changed, or several when `path` is `*` and `value` lists them."""
    if path != "*":
        return with_field(base_service(), path, value)
    doc = base_service()
    assert isinstance(value, list)
    for sub_path, sub_value in value:
        doc = with_field(doc, sub_path, sub_value)
    return doc


INVALID = [
    # metadata
    pytest.param("metadata.name!", None, "metadata.name", "required", id="name-missing"),
    pytest.param(
        "metadata.name",
        "Hello",
        "metadata.name",
        f"'Hello' {DNS1035}",
        id="name-not-dns1035",
    ),
    pytest.param(
        "metadata.name",
        "1hello",
        "metadata.name",
        f"'1hello' {DNS1035}",
        id="name-starts-with-digit",
    ),
    pytest.param(
        "metadata.name",
        "a" * 58,
        "metadata.name",
        f"'{'a' * 58}' is longer than 57 characters: revision names `aaaaaaaa...-00001` must fit in a "
        "63-character DNS label",
        id="name-too-long-for-revisions",
    ),
    pytest.param(
        "metadata.namespace",
        "Team_A",
        "metadata.namespace",
        "'Team_A' is not a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a "
        "letter or digit",
        id="namespace-invalid",
    ),
    pytest.param(
        "metadata.generateName",
        "hello-",
        "metadata.generateName",
        "not supported: give the Service a `name`",
        id="generate-name",
    ),
    pytest.param("metadata.nmae", "x", "metadata.nmae", "unknown field", id="metadata-unknown-field"),
    pytest.param(
        "metadata.annotations",
        {"autoscaling.knative.dev/min-scale": "1"},
        "metadata.annotations[autoscaling.knative.dev/min-scale]",
        "autoscaling annotations belong in spec.template.metadata.annotations (Knative rule)",
        id="autoscaling-annotation-on-service",
    ),
    pytest.param(
        "metadata.annotations",
        {"serving.knative.dev/rollout-duration": "1.5s"},
        "metadata.annotations[serving.knative.dev/rollout-duration]",
        "'1.5s' is not at second precision",
        id="rollout-duration-precision",
    ),
    pytest.param(
        "metadata.annotations",
        {"serving.knative.dev/rollout-duration": "soon"},
        "metadata.annotations[serving.knative.dev/rollout-duration]",
        f"'soon' is not a duration: expected a number, found 's' ({GRAMMAR})",
        id="rollout-duration-syntax",
    ),
    pytest.param(
        "metadata.annotations",
        {"serving.knative.dev/rollout-duration": "-30s"},
        "metadata.annotations[serving.knative.dev/rollout-duration]",
        "'-30s' must be positive",
        id="rollout-duration-negative",
    ),
    pytest.param(
        "metadata.annotations",
        {"note": 5},
        "metadata.annotations.note",
        'value must be a string, not a number (quote it: "5")',
        id="annotation-value-not-string",
    ),
    pytest.param(
        "metadata.labels",
        {"bad key!": "x"},
        "metadata.labels.bad key!",
        f"'bad key!' is not a qualified name: {QUALIFIED}, optionally after a 'prefix/'",
        id="label-key-invalid",
    ),
    pytest.param(
        "spec.template.metadata.labels",
        {"tier": "not valid!"},
        "spec.template.metadata.labels.tier",
        f"'not valid!' is not a label value: {QUALIFIED}",
        id="label-value-invalid",
    ),
    # document structure
    pytest.param("spec.templat", {}, "spec.templat", "unknown field", id="spec-unknown-field"),
    pytest.param(
        "spec.template!",
        None,
        "spec.template",
        "required: a Service needs a revision template with one container",
        id="template-missing",
    ),
    pytest.param("spec", "x", "spec", "must be a mapping, not a string", id="spec-not-mapping"),
    pytest.param("extra", 1, "extra", "unknown field", id="top-level-unknown-field"),
    # revision template
    pytest.param(
        "spec.template.metadata.name",
        "other-00001",
        "spec.template.metadata.name",
        "'other-00001' must start with the Service name: hello-",
        id="revision-name-prefix",
    ),
    pytest.param(
        "spec.template.metadata.name",
        "hello-V1",
        "spec.template.metadata.name",
        f"'hello-V1' {DNS1035}",
        id="revision-name-invalid",
    ),
    pytest.param(
        "spec.template.metadata.namespace",
        "x",
        "spec.template.metadata.namespace",
        "unknown field",
        id="template-metadata-unknown",
    ),
    pytest.param(
        f"{T}.containerConcurrency",
        1001,
        f"{T}.containerConcurrency",
        "1001 is out of range: must be 0-1000 (Knative's default limit)",
        id="concurrency-too-high",
    ),
    pytest.param(
        f"{T}.containerConcurrency",
        -1,
        f"{T}.containerConcurrency",
        "-1 is out of range: must be 0-1000 (Knative's default limit)",
        id="concurrency-negative",
    ),
    pytest.param(
        f"{T}.containerConcurrency",
        "10",
        f"{T}.containerConcurrency",
        "must be an integer, not a string",
        id="concurrency-string",
    ),
    pytest.param(
        f"{T}.timeoutSeconds",
        601,
        f"{T}.timeoutSeconds",
        "601 is out of range: must be 0-600 (Knative's default maximum)",
        id="timeout-too-long",
    ),
    pytest.param(
        f"{T}.timeoutSeconds",
        True,
        f"{T}.timeoutSeconds",
        "must be an integer, not a boolean",
        id="timeout-bool",
    ),
    pytest.param(
        f"{T}.responseStartTimeoutSeconds",
        301,
        f"{T}.responseStartTimeoutSeconds",
        "301 is longer than timeoutSeconds (300): it could never apply",
        id="response-start-over-timeout",
    ),
    pytest.param(
        f"{T}.idleTimeoutSeconds",
        -5,
        f"{T}.idleTimeoutSeconds",
        "-5 is out of range: must be 0-600 (Knative's default maximum)",
        id="idle-negative",
    ),
    pytest.param(
        f"{T}.nodeSelector",
        {"disk": "ssd"},
        f"{T}.nodeSelector",
        "not allowed: needs Knative's feature flag kubernetes.podspec-nodeselector (off by default)",
        id="pod-field-behind-flag",
    ),
    pytest.param(
        f"{T}.restartPolicy",
        "Always",
        f"{T}.restartPolicy",
        "not allowed: Knative manages this pod field",
        id="pod-field-managed",
    ),
    pytest.param(f"{T}.containres", [], f"{T}.containres", "unknown field", id="pod-unknown-field"),
    pytest.param(
        f"{T}.containers", [], f"{T}.containers", "required: at least one container", id="no-container"
    ),
    pytest.param(
        f"{T}.containers[1]",
        {"image": "docker.io/example/sidecar"},
        f"{T}.containers",
        "2 containers: exactly one must name its `ports` (the one that serves); 0 do",
        id="two-containers-no-ports",
    ),
    pytest.param(
        f"{T}.containers",
        [
            {"name": "app", "image": "docker.io/example/app", "ports": [{"containerPort": 8080}]},
            {"name": "app", "image": "docker.io/example/sidecar"},
        ],
        f"{T}.containers[1].name",
        "'app' is already the name of containers[0]",
        id="sidecar-same-name",
    ),
    pytest.param(
        f"{T}.containers",
        [
            {"name": "app", "image": "docker.io/example/app", "ports": [{"containerPort": 8080}]},
            {"name": "helper", "image": "docker.io/example/sidecar", "readinessProbe": {"tcpSocket": {}}},
        ],
        f"{T}.containers[1].readinessProbe",
        "not allowed on a sidecar: needs Knative's feature flag multi-container-probing (off by default)",
        id="sidecar-probe",
    ),
    # container
    pytest.param(f"{C}.imagee", "x", f"{C}.imagee", "unknown field", id="container-unknown-field"),
    pytest.param(
        f"{C}.stdin",
        True,
        f"{C}.stdin",
        "not allowed: Knative does not accept this container field",
        id="container-field-disallowed",
    ),
    pytest.param(
        f"{C}.name",
        "queue-proxy",
        f"{C}.name",
        "'queue-proxy' is a reserved container name",
        id="reserved-name",
    ),
    pytest.param(
        f"{C}.image",
        "not an image",
        f"{C}.image",
        "'not an image' is not an image reference: [registry/]repository[:tag][@sha256:digest] with a "
        "lower-case repository",
        id="image-invalid",
    ),
    pytest.param(
        f"{C}.command",
        ["gunicorn", "--workers", 1],
        f"{C}.command[2]",
        'must be a string, not a number (quote it: "1")',
        id="command-item-not-string",
    ),
    pytest.param(f"{C}.args", "--verbose", f"{C}.args", "must be a list, not a string", id="args-not-list"),
    pytest.param(
        f"{C}.env[0].value",
        8080,
        f"{C}.env[0].value",
        'must be a string, not a number (quote it: "8080")',
        id="env-value-number",
    ),
    pytest.param(
        f"{C}.env[0].value",
        True,
        f"{C}.env[0].value",
        'must be a string, not a boolean (quote it: "True")',
        id="env-value-yes",
    ),
    pytest.param(f"{C}.env[0].name!", None, f"{C}.env[0].name", "required", id="env-name-missing"),
    pytest.param(
        f"{C}.env[0].name",
        "1X",
        f"{C}.env[0].name",
        "'1X' is not a valid environment variable name "
        "(letters, digits, '_', '-' and '.', not starting with a digit)",
        id="env-name-invalid",
    ),
    pytest.param(
        f"{C}.env[0].name",
        "K_REVISION",
        f"{C}.env[0].name",
        "'K_REVISION' is a reserved environment variable: the platform sets it",
        id="env-name-reserved",
    ),
    pytest.param(
        f"{C}.env[0].valueFrom",
        {"secretKeyRef": {"name": "s", "key": "k"}},
        f"{C}.env[0]",
        "may not have both value and valueFrom",
        id="env-value-and-value-from",
    ),
    pytest.param(
        f"{C}.envFrom",
        [{"prefix": "X_"}],
        f"{C}.envFrom[0]",
        "expected exactly one of configMapRef, secretRef",
        id="env-from-without-source",
    ),
    pytest.param(
        f"{C}.ports",
        [{"containerPort": 8080}, {"containerPort": 8081}],
        f"{C}.ports",
        "2 ports are set: Knative allows a single container port",
        id="two-ports",
    ),
    pytest.param(
        f"{C}.ports",
        [{"containerPort": 9091}],
        f"{C}.ports[0].containerPort",
        "9091 is reserved for the queue-proxy; use another port",
        id="reserved-port",
    ),
    pytest.param(
        f"{C}.ports",
        [{"containerPort": 70000}],
        f"{C}.ports[0].containerPort",
        "70000 is out of range: must be 1-65535",
        id="port-out-of-range",
    ),
    pytest.param(
        f"{C}.ports", [{"name": "http1"}], f"{C}.ports[0].containerPort", "required", id="port-number-missing"
    ),
    pytest.param(
        f"{C}.ports",
        [{"containerPort": 8081, "name": "grpc"}],
        f"{C}.ports[0].name",
        "port name 'grpc' is not allowed: use no name, 'http1' or 'h2c'",
        id="port-name",
    ),
    pytest.param(
        f"{C}.ports",
        [{"containerPort": 8081, "protocol": "UDP"}],
        f"{C}.ports[0].protocol",
        "'UDP' is not allowed: only TCP",
        id="port-protocol",
    ),
    pytest.param(
        f"{C}.ports",
        [{"containerPort": 8081, "hostPort": 80}],
        f"{C}.ports[0].hostPort",
        "not allowed: Knative does not accept this container field",
        id="host-port",
    ),
    # probes
    pytest.param(
        f"{C}.readinessProbe",
        probe(httpGet={"path": "/"}, tcpSocket={}),
        f"{C}.readinessProbe",
        "expected exactly one of httpGet, tcpSocket, exec, grpc; got httpGet, tcpSocket",
        id="probe-two-handlers",
    ),
    pytest.param(
        f"{C}.livenessProbe",
        probe(periodSeconds=5),
        f"{C}.livenessProbe",
        "expected exactly one of httpGet, tcpSocket, exec, grpc",
        id="liveness-without-handler",
    ),
    pytest.param(
        f"{C}.readinessProbe",
        probe(httpGet={"path": "/", "port": "admin"}),
        f"{C}.readinessProbe.httpGet.port",
        "probe port 'admin' must match the container port's name",
        id="probe-port-name",
    ),
    pytest.param(
        f"{C}.readinessProbe",
        probe(httpGet={"paht": "/"}),
        f"{C}.readinessProbe.httpGet.paht",
        "unknown field",
        id="probe-handler-unknown-field",
    ),
    pytest.param(
        f"{C}.readinessProbe",
        probe(tcpSocket={}, periodSeconds=-1),
        f"{C}.readinessProbe.periodSeconds",
        "-1 is out of range: must be 0-2147483647 (0 or more)",
        id="probe-negative-period",
    ),
    pytest.param(
        f"{C}.readinessProbe",
        probe(tcpSocket={}, failureThreshold=3),
        f"{C}.readinessProbe.failureThreshold",
        "not allowed when periodSeconds is 0 (Knative's aggressive probing)",
        id="probe-threshold-without-period",
    ),
    pytest.param(
        f"{C}.readinessProbe",
        probe(httpGet={"path": "/", "scheme": "FTP"}),
        f"{C}.readinessProbe.httpGet.scheme",
        "'FTP' is not HTTP or HTTPS",
        id="probe-scheme",
    ),
    # other container fields
    pytest.param(
        f"{C}.imagePullPolicy",
        "Sometimes",
        f"{C}.imagePullPolicy",
        "'Sometimes' is not Always, IfNotPresent or Never",
        id="pull-policy",
    ),
    pytest.param(
        f"{C}.securityContext",
        {"privileged": True},
        f"{C}.securityContext.privileged",
        "not allowed: Knative disallows privileged containers",
        id="privileged",
    ),
    pytest.param(
        f"{C}.securityContext",
        {"capabilities": {"add": ["NET_ADMIN"]}},
        f"{C}.securityContext.capabilities.add",
        "not allowed: needs Knative's feature flag kubernetes.containerspec-addcapabilities",
        id="add-capabilities",
    ),
    pytest.param(
        f"{C}.resources",
        {"limit": {"cpu": "1"}},
        f"{C}.resources.limit",
        "unknown field",
        id="resources-typo",
    ),
    pytest.param(
        "*",
        [(f"{T}.volumes", [CONFIG_VOLUME]), (f"{C}.volumeMounts", [{**CONFIG_MOUNT, "mountPath": "etc"}])],
        f"{C}.volumeMounts[0].mountPath",
        "'etc' must be an absolute path",
        id="mount-path-relative",
    ),
    pytest.param(
        "*",
        [(f"{T}.volumes", [CONFIG_VOLUME]), (f"{C}.volumeMounts", [{**CONFIG_MOUNT, "mountPath": "/dev/"}])],
        f"{C}.volumeMounts[0].mountPath",
        "'/dev' is a reserved path",
        id="mount-path-reserved",
    ),
    pytest.param(
        "*",
        [(f"{T}.volumes", [CONFIG_VOLUME]), (f"{C}.volumeMounts", [{**CONFIG_MOUNT, "readOnly": False}])],
        f"{C}.volumeMounts[0].readOnly",
        "must be true for this type of volume (Knative rule)",
        id="mount-config-map-writable",
    ),
    pytest.param(
        f"{C}.volumeMounts",
        [CONFIG_MOUNT],
        f"{C}.volumeMounts[0].name",
        f"no volume named 'settings' in {T}.volumes",
        id="mount-without-volume",
    ),
    pytest.param(
        f"{T}.volumes", [CONFIG_VOLUME], f"{T}.volumes", "volume 'settings' is not mounted", id="unmounted"
    ),
    pytest.param(
        "*",
        [(f"{T}.volumes", [{"name": "settings"}]), (f"{C}.volumeMounts", [CONFIG_MOUNT])],
        f"{T}.volumes[0]",
        "expected exactly one of secret, configMap, projected, emptyDir",
        id="volume-without-source",
    ),
    pytest.param(
        "*",
        [
            (f"{T}.volumes", [{"name": "settings", "hostPath": {"path": "/"}}]),
            (f"{C}.volumeMounts", [CONFIG_MOUNT]),
        ],
        f"{T}.volumes[0].hostPath",
        "not allowed: needs Knative's feature flag kubernetes.podspec-volumes-hostpath",
        id="volume-host-path",
    ),
    # traffic
    pytest.param(
        "spec.traffic",
        [{"percent": 50}],
        "spec.traffic",
        "traffic percentages sum to 50, want 100",
        id="traffic-sum",
    ),
    pytest.param(
        "spec.traffic",
        [{"percent": 100, "revisionName": "hello-00001", "latestRevision": True}],
        "spec.traffic[0].latestRevision",
        "may not set revisionName 'hello-00001' when latestRevision is true: a target follows either the "
        "latest revision or the one it names",
        id="latest-and-revision-name",
    ),
    pytest.param(
        "spec.traffic",
        [{"percent": 100, "latestRevision": False}],
        "spec.traffic[0].revisionName",
        "required when latestRevision is false: name the revision to pin",
        id="not-latest-without-revision-name",
    ),
    pytest.param(
        "spec.traffic",
        [{"percent": 100, "latestRevision": False, "revisionName": ""}],
        "spec.traffic[0].revisionName",
        "required when latestRevision is false: name the revision to pin",
        id="not-latest-with-empty-revision-name",
    ),
    pytest.param(
        "spec.traffic",
        [{"percent": 100, "latestRevision": False, "revisionName": None}],
        "spec.traffic[0].revisionName",
        "required when latestRevision is false: name the revision to pin",
        id="not-latest-with-null-revision-name",
    ),
    pytest.param(
        "spec.traffic",
        [{"percent": 100, "latestRevision": False, "revisionName": 7}],
        "spec.traffic[0].revisionName",
        'must be a string, not a number (quote it: "7")',
        id="not-latest-with-number-revision-name",
    ),
    pytest.param(
        "spec.traffic",
        [{"percent": 100, "tag": "Blue"}],
        "spec.traffic[0].tag",
        f"'Blue' {DNS1035}",
        id="tag-invalid",
    ),
    pytest.param(
        "spec.traffic",
        [{"percent": 100, "tag": "t" * 58}],
        "spec.traffic[0].tag",
        f"host label {'t' * 58}-hello is longer than 63 characters",
        id="tag-host-too-long",
    ),
    pytest.param(
        "spec.traffic",
        [{"percent": 50, "tag": "a"}, {"percent": 50, "revisionName": "hello-00001", "tag": "a"}],
        "spec.traffic[1].tag",
        "tag 'a' is already used by spec.traffic[0]",
        id="tag-duplicate",
    ),
    pytest.param(
        "spec.traffic",
        [{"percent": 100, "configurationName": "hello"}],
        "spec.traffic[0].configurationName",
        "not allowed in a Service: its traffic targets its own Configuration",
        id="traffic-configuration-name",
    ),
    pytest.param(
        "spec.traffic",
        [{"percent": 100, "url": "http://x"}],
        "spec.traffic[0].url",
        "not allowed in spec: the URL is reported in status",
        id="traffic-url",
    ),
    pytest.param(
        "spec.traffic",
        [{"percent": 100, "revisionName": "Hello_1"}],
        "spec.traffic[0].revisionName",
        f"'Hello_1' {DNS1035}",
        id="traffic-revision-name-invalid",
    ),
    pytest.param(
        "spec.traffic",
        [{"percent": 100, "weight": 1}],
        "spec.traffic[0].weight",
        "unknown field",
        id="traffic-unknown-field",
    ),
]


@pytest.mark.parametrize(("path", "value", "field", "rule"), INVALID)
def test_each_rule_is_reported_with_file_document_field_and_rule(
    tmp_path: Path, path: str, value: object, field: str, rule: str
) -> None:
    source = tmp_path / "service.yaml"
    doc = changed(path, value)
    name = doc["metadata"].get("name", "?")

    assert problems(doc, source) == [f"{source}: document 1 (Service/{name}): {field}: {rule}"]


def test_percent_out_of_range_counts_in_the_sum_as_knative(tmp_path: Path) -> None:
    source = tmp_path / "service.yaml"
    doc = with_field(
        base_service(), "spec.traffic", [{"percent": 101}, {"revisionName": "hello-1", "percent": -2}]
    )

    assert problems(doc, source) == [
        f"{source}: document 1 (Service/hello): spec.traffic[0].percent: 101 is out of range: must be 0-100",
        f"{source}: document 1 (Service/hello): spec.traffic[1].percent: -2 is out of range: must be 0-100",
        f"{source}: document 1 (Service/hello): spec.traffic: traffic percentages sum to 99, want 100",
    ]


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    source = tmp_path / "service.yaml"
    good = base_service("good")
    bad = base_service("bad")
    bad = with_field(bad, f"{C}.imagee", "x")
    bad = with_field(bad, f"{T}.timeoutSeconds", 9999)
    bad = with_field(bad, "spec.traffic", [{"percent": 10, "tag": "x"}, {"percent": 10, "tag": "x"}])
    other = with_field(base_service("other"), f"{C}.ports", [{"containerPort": 8022}])

    with pytest.raises(ServiceFileError) as caught:
        parse_documents(dump(good, bad, other), source)

    prefix = f"{source}: document"
    assert caught.value.problems == [
        f"{prefix} 2 (Service/bad): {T}.timeoutSeconds: 9999 is out of range: must be 0-600 "
        "(Knative's default maximum)",
        f"{prefix} 2 (Service/bad): {C}.imagee: unknown field",
        f"{prefix} 2 (Service/bad): spec.traffic[1].tag: tag 'x' is already used by spec.traffic[0]",
        f"{prefix} 2 (Service/bad): spec.traffic: traffic percentages sum to 20, want 100",
        f"{prefix} 3 (Service/other): {C}.ports[0].containerPort: 8022 is reserved for the queue-proxy; use "
        "another port",
    ]


VALID = [
    pytest.param(f"{C}.readinessProbe", probe(periodSeconds=1), id="readiness-without-handler-gets-tcp"),
    pytest.param(f"{C}.readinessProbe", probe(httpGet={"path": "/", "port": 8080}), id="probe-port-number"),
    pytest.param(f"{C}.readinessProbe", probe(tcpSocket={"port": "http"}), id="probe-port-default-name"),
    pytest.param(f"{T}.timeoutSeconds", 600, id="timeout-at-max"),
    pytest.param(f"{T}.containerConcurrency", 1000, id="concurrency-at-max"),
    pytest.param(f"{C}.ports", [{"containerPort": 8081, "name": "h2c"}], id="port-h2c"),
    pytest.param(
        "metadata.annotations", {"serving.knative.dev/rollout-duration": "2m30s"}, id="rollout-duration"
    ),
    pytest.param(
        "metadata.annotations",
        {"serving.knative.dev/rollout-duration": ".5m"},
        id="rollout-duration-go-fraction",
    ),
    pytest.param(
        "spec.traffic",
        [{"percent": 100}, {"revisionName": "hello-00001", "tag": "old"}],
        id="percent-omitted-counts-zero",
    ),
    pytest.param(
        "spec.traffic", [{"percent": 100, "revisionName": "", "tag": ""}], id="empty-name-and-tag-are-unset"
    ),
    pytest.param("status", {"url": "http://hello.default.example.com"}, id="status-ignored"),
    pytest.param("metadata.uid", "1234", id="server-metadata-ignored"),
    pytest.param(f"{T}.serviceAccountName", "runner", id="service-account"),
    pytest.param(f"{C}.image!", None, id="no-image-locally"),
    pytest.param(
        f"{C}.envFrom",
        [
            {"configMapRef": {"name": "settings"}},
            {"prefix": "DB_", "secretRef": {"name": "db", "optional": True}},
        ],
        id="env-from",
    ),
    pytest.param(
        f"{C}.env",
        [
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "a.b"}}},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw", "optional": False}}},
        ],
        id="value-from",
    ),
]


@pytest.mark.parametrize(("path", "value"), VALID)
def test_accepted_as_knative_accepts(tmp_path: Path, path: str, value: object) -> None:
    doc = with_field(base_service(), path, value)

    [service] = parse_documents(dump(doc), tmp_path / "service.yaml")

    assert service.name == "hello"
    if path in (f"{C}.env", f"{C}.envFrom"):
        # ConfigMaps and Secrets feed the environment locally too (serving.envsource).
        assert local_problems(service) == []


LOCAL = [
    pytest.param(
        f"{C}.command!",
        None,
        f"{C}.command",
        "required locally: `serving up --runtime process` runs every container as a process; add a "
        "`command`, or run the image with a container runtime (podman or docker)",
        id="no-command",
    ),
    pytest.param(
        f"{C}.readinessProbe",
        probe(exec={"command": ["true"]}),
        f"{C}.readinessProbe.exec",
        "not supported locally: the queue-proxy probes with httpGet, tcpSocket or grpc",
        id="exec-probe",
    ),
]


@pytest.mark.parametrize(("path", "value", "field", "rule"), LOCAL)
def test_local_problems_are_separate_from_knative_validation(
    tmp_path: Path, path: str, value: object, field: str, rule: str
) -> None:
    source = tmp_path / "service.yaml"
    [service] = parse_documents(dump(changed(path, value)), source)

    assert local_problems(service) == [f"{source}: document 1 (Service/hello): {field}: {rule}"]


def test_a_container_run_from_its_image_needs_no_command_and_its_working_dir_is_in_the_image(
    tmp_path: Path,
) -> None:
    source = tmp_path / "service.yaml"
    doc = with_field(changed(f"{C}.command!", None), f"{C}.workingDir", "/srv/app")
    [service] = parse_documents(dump(doc), source)
    assert local_problems(service, container=True) == []
    assert [p.split(": ")[2] for p in local_problems(service)] == [f"{C}.command", f"{C}.workingDir"]


def test_working_dir_is_relative_to_the_yaml_folder(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    source = tmp_path / "service.yaml"
    [ok] = parse_documents(dump(with_field(base_service(), f"{C}.workingDir", "app")), source)
    [missing] = parse_documents(dump(with_field(base_service(), f"{C}.workingDir", "nope")), source)

    assert local_problems(ok) == []
    assert local_problems(missing) == [
        f"{source}: document 1 (Service/hello): {C}.workingDir: {tmp_path / 'nope'} is not a directory"
    ]


def test_kubernetes_needs_an_image(tmp_path: Path) -> None:
    source = tmp_path / "service.yaml"
    [service] = parse_documents(dump(with_field(base_service(), f"{C}.image!", None)), source)

    assert kubernetes_problems(service) == [
        f"{source}: document 1 (Service/hello): {C}.image: required on Kubernetes"
    ]


def test_autoscaling_annotations_are_checked_with_the_container_concurrency(tmp_path: Path) -> None:
    source = tmp_path / "service.yaml"
    annotations = {
        "autoscaling.knative.dev/min-scale": "many",
        "autoscaling.knative.dev/min-scales": "1",
    }
    doc = with_field(base_service(), "spec.template.metadata.annotations", annotations)

    found = problems(doc, source)

    prefix = f"{source}: document 1 (Service/hello): spec.template.metadata.annotations: "
    assert len(found) == 2
    assert all(p.startswith(prefix) for p in found)
    assert any("autoscaling.knative.dev/min-scale=many" in p for p in found)
    assert any("autoscaling.knative.dev/min-scales" in p for p in found)


def test_valid_autoscaling_annotations_pass(tmp_path: Path) -> None:
    annotations = {
        "autoscaling.knative.dev/min-scale": "1",
        "autoscaling.knative.dev/max-scale": "5",
        "autoscaling.knative.dev/target": "10",
        "autoscaling.knative.dev/window": "30s",
    }
    doc = with_field(base_service(), "spec.template.metadata.annotations", annotations)
    doc = with_field(doc, f"{T}.containerConcurrency", 10)

    [service] = parse_documents(dump(doc), tmp_path / "service.yaml")

    assert service.template.annotations == annotations


def test_volumes_need_a_container_runtime_locally(tmp_path: Path) -> None:
    source = tmp_path / "service.yaml"
    doc = changed(
        "*",
        [
            (f"{T}.volumes", [{"name": "data", "emptyDir": {}}]),
            (f"{C}.volumeMounts", [{"name": "data", "mountPath": "/d"}]),
        ],
    )
    [service] = parse_documents(dump(doc), source)

    prefix = f"{source}: document 1 (Service/hello)"
    assert local_problems(service) == [
        f"{prefix}: {T}.volumes: volumes need a container runtime: a container that runs as a process has "
        "none; remove its `command` to run its image with podman or docker",
    ]
    assert local_problems(service, container=True) == []


@pytest.mark.parametrize(
    ("volume", "field", "rule"),
    [
        pytest.param(
            {"name": "v", "configMap": {"items": [{"key": "a", "path": "a"}]}},
            "volumes[0].configMap.name",
            "required",
            id="configmap-without-name",
        ),
        pytest.param(
            {"name": "v", "secret": {"secretName": "s", "items": [{"key": "a", "path": "../a"}]}},
            "volumes[0].secret.items[0].path",
            "'../a' must be a relative path without '..'",
            id="escaping-path",
        ),
        pytest.param(
            {"name": "v", "configMap": {"name": "c", "defaultMode": 4096}},
            "volumes[0].configMap.defaultMode",
            "4096 is out of range",
            id="mode-out-of-range",
        ),
        pytest.param(
            {"name": "v", "emptyDir": {"medium": "HugePages"}},
            "volumes[0].emptyDir.medium",
            "'HugePages' is not supported",
            id="medium",
        ),
        pytest.param(
            {"name": "v", "projected": {"sources": [{"configMap": {"name": "c"}, "secret": {"name": "s"}}]}},
            "volumes[0].projected.sources[0]",
            "expected exactly one of",
            id="projection-with-two-sources",
        ),
    ],
)
def test_volume_sources_are_checked(tmp_path: Path, volume: dict[str, object], field: str, rule: str) -> None:
    doc = changed(
        "*",
        [
            (f"{T}.volumes", [volume]),
            (f"{C}.volumeMounts", [{"name": "v", "mountPath": "/v", "readOnly": True}]),
        ],
    )
    with pytest.raises(ServiceFileError) as caught:
        parse_documents(dump(doc), tmp_path / "service.yaml")
    assert any(f"{T}.{field}: {rule}" in p for p in caught.value.problems), caught.value.problems


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=-3, max_value=103), min_size=1, max_size=4))
def test_traffic_is_valid_exactly_when_percents_are_in_range_and_sum_to_100(percents: list[int]) -> None:
    entries: list[dict[str, object]] = [{"latestRevision": True, "percent": percents[0]}]
    entries += [{"revisionName": f"hello-0000{i}", "percent": p} for i, p in enumerate(percents[1:], start=1)]
    doc = with_field(base_service(), "spec.traffic", entries)
    valid = sum(percents) == 100 and all(0 <= p <= 100 for p in percents)
    source = Path("/srv/service.yaml")

    if valid:
        [service] = parse_documents(dump(doc), source)
        assert [t.percent for t in service.traffic] == percents
        return
    found = problems(doc, source)
    out_of_range = [p for p in percents if not 0 <= p <= 100]
    assert len([p for p in found if "is out of range: must be 0-100" in p]) == len(out_of_range)
    assert any(f"sum to {sum(percents)}, want 100" in p for p in found) == (sum(percents) != 100)


def test_several_containers_need_a_container_runtime_locally(tmp_path: Path) -> None:
    source = tmp_path / "service.yaml"
    containers = [
        {"name": "app", "image": "docker.io/example/app", "ports": [{"containerPort": 8080}]},
        {"name": "helper", "image": "docker.io/example/helper"},
        {"name": "nameless-image", "command": ["sleep", "1"]},
    ]
    [service] = parse_documents(dump(changed(f"{T}.containers", containers)), source)
    assert service.template.container.name == "app"
    assert [s.index for s in service.template.sidecars] == [1, 2]
    prefix = f"{source}: document 1 (Service/hello)"
    assert local_problems(service, container=True) == [
        f"{prefix}: {T}.containers[2].image: required locally: a sidecar runs from its image"
    ]
    assert (
        f"{prefix}: {T}.containers: several containers need a container runtime: they share one network "
        in (local_problems(service)[0])
    )
