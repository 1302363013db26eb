"""Eventing objects as the Kubernetes API returns them (server-set metadata, status), read with the same rules
as `serving up` and resolved to in-cluster addresses: a Service's `.svc.<cluster domain>` name, the Broker
ingress Service, and the hosts the eventing component connects itself."""

from __future__ import annotations

from typing import Any

from controller.kube.eventing import KubeAddresses, read_object
from controller.reconcile.eventing import resolve
from serving.events import EventObject

ADDRESSES = KubeAddresses("knative-serving", "cluster.local")


def api_object(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    api = "eventing.knative.dev/v1" if kind in ("Broker", "Trigger") else "sources.knative.dev/v1"
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": "0f1e2d3c-0000-4000-8000-000000000001",
            "resourceVersion": "4711",
            "generation": 2,
            "creationTimestamp": "2026-12-06T10:00:00Z",
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        },
        "spec": spec,
        "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]},
    }


def read(kind: str, name: str, spec: dict[str, Any]) -> EventObject:
    found, problems = read_object(api_object(kind, name, spec))
    assert problems == []
    assert found is not None
    return found


SERVICE_REF = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "display"}
BROKER_REF = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}


def test_objects_from_the_api_resolve_to_in_cluster_addresses() -> None:
    events = [
        read("Broker", "default", {}),
        read("Trigger", "all", {"broker": "default", "subscriber": {"ref": SERVICE_REF}}),
        read("PingSource", "tick", {"schedule": "*/5 * * * *", "sink": {"ref": BROKER_REF}}),
    ]
    resolved = resolve(events, {("team", "display")}, [], ADDRESSES)
    assert resolved.not_ready == {}
    spec = resolved.spec
    assert [t.subscriber for t in spec.triggers] == ["http://display.team.svc.cluster.local"]
    broker = "http://broker-ingress.knative-serving.svc.cluster.local/team/default"
    assert [p.sink for p in spec.pings] == [broker]
    assert spec.service_hosts == ("display.team.svc.cluster.local",)
    assert spec.broker_hosts == ("broker-ingress.knative-serving.svc.cluster.local",)


def test_a_missing_service_is_a_reason_and_a_uri_is_not_the_platforms() -> None:
    events = [
        read("Broker", "default", {}),
        read("Trigger", "gone", {"broker": "default", "subscriber": {"ref": SERVICE_REF}}),
        read("Trigger", "out", {"broker": "default", "subscriber": {"uri": "http://example.com/hook"}}),
    ]
    resolved = resolve(events, set(), [], ADDRESSES)
    assert resolved.not_ready == {
        ("Trigger", "team", "gone"): "spec.subscriber: Service team/display not found"
    }
    assert {t.name: t.subscriber for t in resolved.spec.triggers} == {
        "gone": None,
        "out": "http://example.com/hook",
    }
    assert resolved.spec.service_hosts == ()


def test_an_invalid_object_names_the_field_without_a_file() -> None:
    found, problems = read_object(api_object("Trigger", "bad", {"broker": "default"}))
    assert found is None
    assert problems
    assert all(p.startswith("spec.") for p in problems), problems
    assert any("spec.subscriber" in p for p in problems)


def test_a_broker_class_this_platform_does_not_run_is_a_problem() -> None:
    obj = api_object("Broker", "other", {})
    obj["metadata"]["annotations"]["eventing.knative.dev/broker.class"] = "SomeOtherBroker"
    found, problems = read_object(obj)
    assert found is None
    assert any("broker.class" in p and "SomeOtherBroker" in p for p in problems), problems
