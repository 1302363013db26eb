"""What the data plane reads of the cluster: pods from EndpointSlices, their start times from Pods, and an
activator's position among its peers."""

from __future__ import annotations

import datetime
from typing import Any

from serving.kube.platform import QUEUE_PORT, peer_position, pod_started_at, pods_of


def endpoint(ip: str, pod: str, *, ready: bool = True, terminating: bool = False) -> dict[str, Any]:
    return {
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": ready, "terminating": terminating},
        "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"},
    }


def endpoint_slice(*endpoints: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "default", "name": "hello-00001-private-x"},
        "endpoints": list(endpoints),
    }


def test_pods_come_from_every_slice_with_their_readiness() -> None:
    slices = [
        endpoint_slice(endpoint("10.0.0.2", "b"), endpoint("10.0.0.3", "c", ready=False)),
        endpoint_slice(
            endpoint("10.0.0.4", "d", ready=False, terminating=True), {"addresses": [], "conditions": {}}
        ),
    ]
    pods = pods_of(slices)
    assert [(p.name, p.host, p.port, p.ready) for p in pods] == [
        ("b", "10.0.0.2", QUEUE_PORT, True),
        ("c", "10.0.0.3", QUEUE_PORT, False),
    ], "a terminating pod (d) is not listed: it drains and takes nothing new, not even a probe"
    assert {p.started_at for p in pods} == {0.0}


def test_start_times_are_looked_up_by_namespace_and_pod() -> None:
    starts = {("default", "b"): 100.0, ("default", "c"): 200.0}
    pods = pods_of(
        [endpoint_slice(endpoint("10.0.0.2", "b"), endpoint("10.0.0.3", "c"))],
        lambda ns, name: starts[(ns, name)],
    )
    assert {p.name: p.started_at for p in pods} == {"b": 100.0, "c": 200.0}


def test_a_pod_starts_at_its_start_time_else_its_creation() -> None:
    started = datetime.datetime(2026, 12, 5, 7, 0, 0, tzinfo=datetime.UTC).timestamp()
    created = started - 30
    assert pod_started_at({"status": {"startTime": "2026-12-05T07:00:00Z"}}) == started
    assert (
        pod_started_at({"metadata": {"creationTimestamp": "2026-12-05T06:59:30Z"}, "status": {}}) == created
    )
    assert pod_started_at({"metadata": {"creationTimestamp": "yesterday"}}) == 0.0
    assert pod_started_at({}) == 0.0


def test_an_activator_finds_its_position_among_ready_peers() -> None:
    assert peer_position(["10.0.0.9", "10.0.0.2", "10.0.0.5"], "10.0.0.5") == (1, 3)
    # Not listed yet (its own readiness has not reached the slice): counted in, in address order.
    assert peer_position(["10.0.0.9", "10.0.0.2"], "10.0.0.5") == (1, 3)
