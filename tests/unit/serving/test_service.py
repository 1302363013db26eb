"""Parsing Service files: the examples, defaults, multi-document files, several files, file-level errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.autoscaling import parse_config
from serving.service import (
    Service,
    ServiceFileError,
    kubernetes_problems,
    load_files,
    local_problems,
    parse_documents,
)
from tests.unit.serving.servicedoc import base_service, dump, with_field, write

KINDS = (
    "serving.knative.dev/v1 Service, v1 ConfigMap and Secret, eventing.knative.dev/v1 Broker and Trigger, "
    "sources.knative.dev/v1 PingSource, SinkBinding and ContainerSource, sources.knative.dev/v1alpha1 "
    "GitHubSource documents"
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(EXAMPLES / "helloworld-python" / "service.yaml", id="helloworld"),
        pytest.param(EXAMPLES / "traffic-split" / "v1.yaml", id="traffic-split-v1"),
        pytest.param(EXAMPLES / "traffic-split" / "v2.yaml", id="traffic-split-v2"),
    ],
)
def test_examples_are_valid_and_run_locally(path: Path) -> None:
    services = load_files([path])

    assert len(services) == 1
    assert local_problems(services[0]) == []
    assert kubernetes_problems(services[0]) == []


def test_helloworld_example_maps_to_the_local_platform() -> None:
    [service] = load_files([EXAMPLES / "helloworld-python" / "service.yaml"])

    assert service.key == ("default", "helloworld-python")
    assert service.base_dir == EXAMPLES / "helloworld-python"
    assert (service.base_dir / "app.py").is_file()
    container = service.template.container
    assert container.command[0] == "gunicorn"
    assert "127.0.0.1:$(PORT)" in container.command
    assert container.env == (("TARGET", "Python Sample v1"),)


def test_knative_defaults_apply_when_fields_are_absent(tmp_path: Path) -> None:
    [service] = parse_documents(dump(base_service()), tmp_path / "s.yaml")

    assert service.namespace == "default"
    assert service.template.container_concurrency == 0
    assert service.template.timeout_seconds == 300
    assert service.template.response_start_timeout_seconds is None
    assert service.template.idle_timeout_seconds is None
    assert service.template.container.port == 8080
    assert service.template.container.readiness_probe is None
    assert service.template.name is None
    [target] = service.traffic
    assert (target.percent, target.tracks_latest, target.tag) == (100, True, None)


def test_zero_timeout_means_the_default(tmp_path: Path) -> None:
    doc = with_field(base_service(), "spec.template.spec.timeoutSeconds", 0)

    [service] = parse_documents(dump(doc), tmp_path / "s.yaml")

    assert service.template.timeout_seconds == 300


def test_every_supported_field_is_read(tmp_path: Path) -> None:
    doc = base_service()
    doc["metadata"].update(namespace="team-a", labels={"app": "hello"}, annotations={"note": "x"})
    template = doc["spec"]["template"]
    template["metadata"] = {
        "name": "hello-first",
        "annotations": {"autoscaling.knative.dev/target": "10"},
        "labels": {"tier": "web"},
    }
    template["spec"].update(
        containerConcurrency=4, timeoutSeconds=120, responseStartTimeoutSeconds=30, idleTimeoutSeconds=60
    )
    container = template["spec"]["containers"][0]
    container.update(
        name="user",
        args=["--verbose"],
        workingDir="app",
        ports=[{"containerPort": 9000, "name": "http1", "protocol": "TCP"}],
        readinessProbe={"httpGet": {"path": "/healthz", "port": "http1"}, "periodSeconds": 1},
        livenessProbe={"tcpSocket": {}},
        resources={"limits": {"cpu": "1", "memory": "128Mi"}},
        imagePullPolicy="IfNotPresent",
        securityContext={"runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
    )
    doc["spec"]["traffic"] = [
        {"revisionName": "hello-first", "percent": 90, "tag": "first"},
        {"latestRevision": True, "percent": 10, "tag": "latest"},
    ]

    [service] = parse_documents(dump(doc), tmp_path / "s.yaml")

    assert service.key == ("team-a", "hello")
    assert service.labels == {"app": "hello"}
    assert service.annotations == {"note": "x"}
    t = service.template
    assert t.name == "hello-first"
    assert t.annotations == {"autoscaling.knative.dev/target": "10"}
    assert t.labels == {"tier": "web"}
    assert (t.container_concurrency, t.timeout_seconds) == (4, 120)
    assert (t.response_start_timeout_seconds, t.idle_timeout_seconds) == (30, 60)
    c = t.container
    assert c.args == ("--verbose",)
    assert c.working_dir == "app"
    assert c.port == 9000
    assert c.readiness_probe == {"httpGet": {"path": "/healthz", "port": "http1"}, "periodSeconds": 1}
    assert [(x.revision_name, x.percent, x.tag, x.tracks_latest) for x in service.traffic] == [
        ("hello-first", 90, "first", False),
        (None, 10, "latest", True),
    ]


def test_env_keeps_order_and_skips_value_from(tmp_path: Path) -> None:
    env = [
        {"name": "A", "value": "1"},
        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "B", "value": "$(A)-2"},
        {"name": "EMPTY"},
    ]
    doc = with_field(base_service(), "spec.template.spec.containers[0].env", env)

    [service] = parse_documents(dump(doc), tmp_path / "s.yaml")

    assert service.template.container.env == (("A", "1"), ("B", "$(A)-2"), ("EMPTY", ""))
    # `valueFrom` runs locally as on Kubernetes: serving.envsource reads it when the container starts.
    assert local_problems(service) == []


def test_multi_document_file_skips_empty_documents(tmp_path: Path) -> None:
    text = "---\n" + dump(base_service("one")) + "---\n---\n" + dump(base_service("two")) + "---\n"

    services = parse_documents(text, tmp_path / "s.yaml")

    # A leading `---` opens the first document; `---\n---` leaves an empty one in between.
    assert [(s.name, s.document) for s in services] == [("one", 1), ("two", 3)]


def test_several_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", base_service("one"), base_service("two"))
    (tmp_path / "sub").mkdir()
    second = write(tmp_path / "sub", "b.yaml", with_field(base_service("one"), "metadata.namespace", "other"))

    services = load_files([first, second])

    assert [(s.key, s.source, s.base_dir) for s in services] == [
        (("default", "one"), first, tmp_path),
        (("default", "two"), first, tmp_path),
        (("other", "one"), second, tmp_path / "sub"),
    ]


def problems_of(paths: list[Path]) -> list[str]:
    with pytest.raises(ServiceFileError) as caught:
        load_files(paths)
    return caught.value.problems


def test_duplicate_service_across_files_names_both(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", base_service("one"))
    second = write(tmp_path, "b.yaml", base_service("two"), base_service("one"))

    assert problems_of([first, second]) == [
        f"{second}: document 2 (Service/one): metadata.name: Service default/one is already defined in "
        f"{first} document 1"
    ]


def test_duplicate_service_within_one_text(tmp_path: Path) -> None:
    with pytest.raises(ServiceFileError) as caught:
        parse_documents(dump(base_service("one"), base_service("one")), tmp_path / "s.yaml")

    assert caught.value.problems == [
        f"{tmp_path / 's.yaml'}: document 2 (Service/one): metadata.name: Service default/one is already "
        f"defined in {tmp_path / 's.yaml'} document 1"
    ]


def test_problems_from_every_file_are_reported_together(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: [x\n")
    missing = tmp_path / "missing.yaml"
    invalid = write(
        tmp_path, "invalid.yaml", with_field(base_service(), "spec.template.spec.containers[0].imagee", "x")
    )
    good = write(tmp_path, "good.yaml", base_service("good"))

    problems = problems_of([bad_yaml, missing, invalid, good])

    assert len(problems) == 3
    assert problems[0].startswith(f"{bad_yaml}: line 5, column 1: invalid YAML: ")
    assert problems[1].startswith(f"{missing}: cannot read: ")
    assert problems[2] == (
        f"{invalid}: document 1 (Service/hello): spec.template.spec.containers[0].imagee: unknown field"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "kind: Service\nmetadata:\n  name: a\n  name: b\n",
            "line 4, column 3: invalid YAML: while constructing a mapping duplicate key 'name'",
            id="duplicate-key",
        ),
        pytest.param(
            "a: b: c\n", "line 1, column 5: invalid YAML: mapping values are not allowed here", id="syntax"
        ),
        pytest.param(
            "a: " + "[" * 300 + "]" * 300 + "\n",
            "line 1, column 67: invalid YAML: lists and mappings nested deeper than 64 levels "
            "(a Service needs at most 12)",
            id="nested-300",
        ),
        pytest.param(
            "kind: Service\nmetadata:\n  name: !!int x\n",
            "line 3, column 9: invalid YAML: cannot read 'x' as !!int: "
            "invalid literal for int() with base 10: 'x'",
            id="bad-tagged-scalar",
        ),
        pytest.param("", "no Service, ConfigMap, Secret or Eventing documents in this file", id="empty-file"),
        pytest.param(
            "---\n---\n",
            "no Service, ConfigMap, Secret or Eventing documents in this file",
            id="only-empty-documents",
        ),
        pytest.param(
            "apiVersion: v1\nmetadata:\n  name: x\n",
            "document 1 (?/x): kind: required: this file should hold " + KINDS,
            id="no-kind",
        ),
        pytest.param(
            "- a\n- b\n", "document 1: must be a mapping (a Kubernetes object), not ['a', 'b']", id="list"
        ),
        pytest.param(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: settings\n",
            "document 1 (Deployment/settings): kind: 'Deployment' is not supported: a file may hold " + KINDS,
            id="other-kind",
        ),
        pytest.param(
            dump(with_field(base_service(), "apiVersion", "serving.knative.dev/v1beta1")),
            "document 1 (Service/hello): apiVersion: must be 'serving.knative.dev/v1', not "
            "'serving.knative.dev/v1beta1'",
            id="old-api-version",
        ),
    ],
)
def test_file_level_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)

    assert problems_of([path]) == [f"{path}: {expected}"]


def test_error_message_lists_every_problem() -> None:
    error = ServiceFileError(["a: one", "b: two"])

    assert str(error) == "invalid Service files:\n  - a: one\n  - b: two"
    assert error.problems == ["a: one", "b: two"]


def test_local_checks_are_reported_with_every_other_problem(tmp_path: Path) -> None:
    no_command = write(
        tmp_path,
        "a.yaml",
        with_field(base_service("nocmd"), "spec.template.spec.containers[0].command!", None),
    )
    invalid = write(
        tmp_path, "b.yaml", with_field(base_service("bad"), "spec.template.spec.containers[0].imagee", "x")
    )

    with pytest.raises(ServiceFileError) as caught:
        load_files([no_command, invalid], checks=(local_problems,))

    text = "\n".join(caught.value.problems)
    assert f"{invalid}: document 1 (Service/bad): spec.template.spec.containers[0].imagee" in text
    assert f"{no_command}: document 1 (Service/nocmd): spec.template.spec.containers[0].command" in text


def test_annotations_are_checked_against_the_cluster_autoscaler_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cold.yaml",
        with_field(
            base_service("cold"),
            "spec.template.metadata.annotations",
            {"autoscaling.knative.dev/initial-scale": "0"},
        ),
    )
    with pytest.raises(ServiceFileError, match="initial-scale"):
        load_files([path])

    services = load_files([path], config=parse_config({"allow-zero-initial-scale": "true"}))
    assert services[0].template.annotations["autoscaling.knative.dev/initial-scale"] == "0"


def test_unreadable_and_oversized_files_are_problems_naming_them(tmp_path: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    big = tmp_path / "big.yaml"
    with big.open("wb") as file:
        file.truncate(50 << 20)
    good = write(tmp_path, "good.yaml", base_service("good"))

    problems = problems_of([binary, folder, big, good])

    assert problems == [
        f"{binary}: line 1: cannot read: not UTF-8 text (byte 0x89 at offset 0: invalid start byte)",
        f"{folder}: cannot read: is a directory",
        f"{big}: too large: 52428800 bytes, over the limit of 1048576 bytes (1 MiB) for a Service file "
        "(Kubernetes refuses objects over 1.5 MiB)",
    ]


# Pieces of YAML that stress the reader: tags whose constructor trusts its input, aliases, nesting, control
# characters, keys of every type, and fields of a Service.
_PIECES = [
    *(
        "a",
        "kind",
        "name",
        ": ",
        "- ",
        "? ",
        "\n",
        "  ",
        "[",
        "]",
        "{",
        "}",
        ", ",
        "'",
        '"',
        "~",
        "1",
        "-1",
        "\t",
    ),
    *("&x ", "*x", "<<: ", "!!int ", "!!float ", "!!bool ", "!!timestamp ", "!!binary ", "!!set ", "!!omap "),
    *("!!str ", "!!map ", "!!seq ", "!foo ", "2001-02-30", "1e999", ".nan", "\x07", "\ufeff", "---\n", "..."),
    *("kind: Service\n", "apiVersion: serving.knative.dev/v1\n", "metadata:\n  name: x\n", "spec:\n"),
    *("  template:\n", "  traffic:\n", "    - revisionName: ", "      latestRevision: ", "%YAML 1.1\n"),
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40).map("".join))
def test_any_text_gives_services_or_a_service_file_error(text: str) -> None:
    """Whatever an edit holds, `serving up` gets Services or problems to print: no other exception escapes."""
    try:
        services = parse_documents(text, Path("any.yaml"))
    except ServiceFileError as exc:
        problems = exc.problems
    else:
        assert all(isinstance(s, Service) for s in services)
        return
    assert problems
    assert all(p.startswith("any.yaml: ") for p in problems), problems
