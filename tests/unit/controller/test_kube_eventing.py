"""Eventing objects as the Kubernetes API returns them (server-set metadata, status), read with the same rules
as `serving up` and resolved to in-cluster addresses: a Service's `.svc.<cluster domain>` name, the Broker
ingress Service, and the hosts the eventing component connects itself."""

from __future__ import annotations

from typing import Any

from controller.kube.eventing import KubeAddresses, KubeEventing, read_object
from controller.reconcile.eventing import resolve
from serving.contract.controller import ControllerConfig
from serving.events import EventObject
from serving.kube.api import BROKERS, PING_SOURCES

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


class RecordingKube:
    """The status subresource writes a `KubeEventing` makes, recorded in order."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, str, dict[str, Any]]] = []

    async def merge_patch(
        self, resource: Any, namespace: str, name: str, body: dict[str, Any], sub: str = ""
    ) -> dict[str, Any]:
        assert sub == "status"
        self.patches.append((resource.kind, name, body["status"]))
        return body


async def test_an_object_newer_than_the_pass_waits_for_the_next_one() -> None:
    """A PingSource that reached the informer after the last pass resolved is not in that pass's spec: its
    status is written by the next pass, with its sink, never as Ready without one."""
    kube = RecordingKube()
    eventing = KubeEventing(kube, ControllerConfig())  # type: ignore[arg-type]
    brokers, pings = eventing.objects[BROKERS.plural], eventing.objects[PING_SOURCES.plural]
    brokers.cache[("team", "default")] = api_object("Broker", "default", {})
    await eventing.sync()
    pings.cache[("team", "tick")] = api_object(
        "PingSource", "tick", {"schedule": "* * * * *", "sink": {"ref": BROKER_REF}}
    )
    await eventing._write_all()
    assert [(kind, name) for kind, name, _ in kube.patches] == [("Broker", "default")]

    await eventing.sync()
    await eventing._write_all()
    kind, name, status = kube.patches[-1]
    assert (kind, name) == ("PingSource", "tick")
    assert status["sinkUri"] == "http://broker-ingress.knative-serving.svc.cluster.local/team/default"
    assert status["conditions"][0]["status"] == "True"
