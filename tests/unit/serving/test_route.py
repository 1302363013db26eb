"""Configuration -> Revision naming on template changes, and Route resolution of `spec.traffic`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from serving.route import Configuration, ConfigurationError, RouteError, RouteTarget, resolve_route
from serving.service import Service, parse_documents
from tests.unit.serving.servicedoc import base_service, dump, with_field

C = "spec.template.spec.containers[0]"
SOURCE = Path("/srv/hello.yaml")


def service(doc: dict[str, Any]) -> Service:
    [parsed] = parse_documents(dump(doc), SOURCE)
    return parsed


def version(target: str, *changes: tuple[str, object]) -> Service:
    doc = base_service(target=target)
    for path, value in changes:
        doc = with_field(doc, path, value)
    return service(doc)


def apply_all(*services: Service) -> tuple[Configuration, list[tuple[str, bool]]]:
    configuration = Configuration("hello")
    return configuration, [configuration.apply(s.template) for s in services]


def test_first_template_makes_revision_00001() -> None:
    configuration, results = apply_all(version("v1"))

    assert results == [("hello-00001", True)]
    assert configuration.latest == "hello-00001"
    assert list(configuration.revisions) == ["hello-00001"]


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        pytest.param(version("v1"), ("hello-00001", False), id="identical"),
        pytest.param(
            version("v1", ("spec.template.spec.timeoutSeconds", 300)),
            ("hello-00001", False),
            id="explicit-default",
        ),
        pytest.param(version("v2"), ("hello-00002", True), id="env-changed"),
        pytest.param(
            version("v1", ("spec.template.metadata.annotations", {"autoscaling.knative.dev/target": "5"})),
            ("hello-00002", True),
            id="annotation-changed",
        ),
        pytest.param(
            version("v1", (f"{C}.resources", {"limits": {"memory": "1Gi"}})),
            ("hello-00002", True),
            id="field-ignored-locally-changed",
        ),
        pytest.param(
            version("v1", ("spec.traffic", [{"percent": 100, "tag": "x"}])),
            ("hello-00001", False),
            id="traffic-only",
        ),
    ],
)
def test_new_revision_only_when_the_template_changes(second: Service, expected: tuple[str, bool]) -> None:
    configuration, results = apply_all(version("v1"), second)

    assert results[1] == expected
    assert configuration.latest == expected[0]


def test_reverting_a_template_makes_a_new_generation() -> None:
    configuration, results = apply_all(version("v1"), version("v2"), version("v1"))

    assert results == [("hello-00001", True), ("hello-00002", True), ("hello-00003", True)]
    assert list(configuration.revisions) == ["hello-00001", "hello-00002", "hello-00003"]


def test_revision_templates_are_kept_immutable_in_history() -> None:
    configuration, _ = apply_all(version("v1"), version("v2"))

    assert configuration.revisions["hello-00001"].container.env == (("TARGET", "v1"),)
    assert configuration.revisions["hello-00002"].container.env == (("TARGET", "v2"),)


def named(target: str, name: str) -> Service:
    return version(target, ("spec.template.metadata.name", name))


def test_user_chosen_revision_names() -> None:
    configuration, results = apply_all(named("v1", "hello-blue"), named("v2", "hello-green"), version("v3"))

    # Generated names count every template change, chosen names included (Knative's generation).
    assert results == [("hello-blue", True), ("hello-green", True), ("hello-00003", True)]
    assert configuration.latest == "hello-00003"


def test_same_chosen_name_and_template_is_no_change() -> None:
    _, results = apply_all(named("v1", "hello-blue"), named("v1", "hello-blue"))

    assert results == [("hello-blue", True), ("hello-blue", False)]


def test_returning_to_an_earlier_chosen_name_reuses_that_revision() -> None:
    configuration, results = apply_all(
        named("v1", "hello-blue"), named("v2", "hello-green"), named("v1", "hello-blue")
    )

    assert results[2] == ("hello-blue", False)
    assert configuration.latest == "hello-blue"
    assert list(configuration.revisions) == ["hello-blue", "hello-green"]


def test_changed_template_under_the_same_chosen_name_is_an_error() -> None:
    configuration = Configuration("hello")
    configuration.apply(named("v1", "hello-blue").template)

    with pytest.raises(
        ConfigurationError, match="revision 'hello-blue' already exists with a different template"
    ):
        configuration.apply(named("v2", "hello-blue").template)
    assert configuration.latest == "hello-blue"
    assert configuration.revisions["hello-blue"].container.env == (("TARGET", "v1"),)


def test_generated_name_taken_by_a_chosen_one_is_an_error() -> None:
    configuration = Configuration("hello")
    configuration.apply(named("v1", "hello-00002").template)

    with pytest.raises(ConfigurationError, match="revision 'hello-00002' already exists"):
        configuration.apply(version("v2").template)


def traffic(*entries: dict[str, object]) -> Service:
    return version("v1", ("spec.traffic", list(entries)))


def test_default_route_sends_everything_to_the_latest() -> None:
    configuration, _ = apply_all(version("v1"), version("v2"))

    assert resolve_route(version("v2"), configuration) == [RouteTarget("hello-00002", 100, None)]


def test_latest_ready_keeps_traffic_on_the_old_revision_while_the_new_one_starts() -> None:
    configuration, _ = apply_all(version("v1"), version("v2"))

    routes = resolve_route(version("v2"), configuration, latest_ready="hello-00001")

    assert routes == [RouteTarget("hello-00001", 100, None)]


def test_split_with_tags_and_a_zero_percent_tag() -> None:
    configuration, _ = apply_all(version("v1"), version("v2"))
    split = traffic(
        {"revisionName": "hello-00001", "percent": 80, "tag": "stable"},
        {"latestRevision": True, "percent": 20, "tag": "candidate"},
        {"revisionName": "hello-00001", "tag": "old"},
    )

    assert resolve_route(split, configuration) == [
        RouteTarget("hello-00001", 80, "stable"),
        RouteTarget("hello-00002", 20, "candidate"),
        RouteTarget("hello-00001", 0, "old"),
    ]


def test_unknown_revision_names_are_each_reported() -> None:
    configuration, _ = apply_all(version("v1"))
    split = traffic(
        {"revisionName": "hello-00007", "percent": 50},
        {"revisionName": "hello-gone", "percent": 50},
    )

    with pytest.raises(RouteError) as caught:
        resolve_route(split, configuration)

    prefix = f"{SOURCE}: document 1 (Service/hello)"
    assert caught.value.problems == [
        f"{prefix}: spec.traffic[0].revisionName: revision 'hello-00007' does not exist in Service "
        "default/hello (revisions: hello-00001)",
        f"{prefix}: spec.traffic[1].revisionName: revision 'hello-gone' does not exist in Service "
        "default/hello (revisions: hello-00001)",
    ]


def test_latest_with_no_revision_is_an_error() -> None:
    with pytest.raises(
        RouteError, match=r"spec.traffic\[0\]: latestRevision: Service hello has no revision yet"
    ):
        resolve_route(version("v1"), Configuration("hello"))


def test_traffic_split_example_resolves_after_both_versions() -> None:
    examples = Path(__file__).resolve().parents[3] / "examples" / "traffic-split"
    [v1] = parse_documents((examples / "v1.yaml").read_text(), examples / "v1.yaml")
    [v2] = parse_documents((examples / "v2.yaml").read_text(), examples / "v2.yaml")
    configuration = Configuration("traffic-split")

    assert configuration.apply(v1.template) == ("traffic-split-v1", True)
    assert resolve_route(v1, configuration) == [RouteTarget("traffic-split-v1", 100, "v1")]
    with pytest.raises(RouteError, match="revision 'traffic-split-v2' does not exist"):
        resolve_route(v2, configuration)
    assert configuration.apply(v2.template) == ("traffic-split-v2", True)
    assert resolve_route(v2, configuration) == [
        RouteTarget("traffic-split-v1", 80, "v1"),
        RouteTarget("traffic-split-v2", 20, "v2"),
        RouteTarget("traffic-split-v2", 0, "latest"),
    ]


def test_digest_ignores_key_order_and_formatting() -> None:
    written = """
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello}
spec:
  template:
    spec:
      containers:
        - image: docker.io/example/hello
          command: ["python", "-m", "http.server", "$(PORT)"]
          env: [{name: TARGET, value: v1}]
"""
    reordered = """
kind: Service
apiVersion: serving.knative.dev/v1
spec:
  template:
    spec:
      containers:
        - env:
            - value: v1
              name: TARGET
          command:
            - python
            - -m
            - http.server
            - $(PORT)
          image: docker.io/example/hello
metadata:
  name: hello
"""
    [a] = parse_documents(written, SOURCE)
    [b] = parse_documents(reordered, SOURCE)

    assert a.template.digest() == b.template.digest()
    assert a.template.digest() == version("v1").template.digest()
    assert a.template.digest() != version("v2").template.digest()
