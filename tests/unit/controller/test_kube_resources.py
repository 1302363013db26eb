"""The objects a Service becomes on Kubernetes, the routing table read back from Routes, and pods read from
EndpointSlices: pure functions, checked without a cluster (the cluster tests are in tests/kube)."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from controller.kube import resources
from controller.kube.controller import _template_of, condition, worst
from controller.kube.ingress import route_table
from controller.kube.labels import CONFIGURATION_GENERATION, DIGEST, REVISION_UID
from queueproxy.config import load_config
from serving.contract.controller import ControllerConfig
from serving.contract.probe import probe_token
from serving.kube.platform import pods_of, revision_of, scaler_status_of
from serving.platform import RevisionKey
from serving.route import Configuration, RouteTarget
from serving.service import Service, ServiceFileError, parse_object

ROOT = Path(__file__).resolve().parents[3]

SERVICE_DOC: dict[str, Any] = {
    "apiVersion": "serving.knative.dev/v1",
    "kind": "Service",
    "metadata": {"name": "hello", "namespace": "team", "uid": "svc-uid", "generation": 3},
    "spec": {
        "template": {
            "metadata": {"annotations": {"autoscaling.knative.dev/target": "10"}, "labels": {"tier": "web"}},
            "spec": {
                "containerConcurrency": 4,
                "timeoutSeconds": 120,
                "containers": [
                    {
                        "image": "docker.io/example/hello",
                        "command": ["python3", "app.py"],
                        "env": [{"name": "TARGET", "value": "World"}],
                        "ports": [{"containerPort": 9000}],
                        "readinessProbe": {"httpGet": {"path": "/healthz"}},
                        "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}},
                    }
                ],
            },
        },
        "traffic": [
            {"latestRevision": True, "percent": 80},
            {"revisionName": "hello-00001", "percent": 20, "tag": "old"},
        ],
    },
}


def owner(kind: str, name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": "serving.knative.dev/v1", "kind": kind, "metadata": {"name": name, "uid": uid}}


@pytest.fixture
def service() -> Service:
    return parse_object(SERVICE_DOC)


def revision_obj(service: Service, name: str = "hello-00002") -> dict[str, Any]:
    obj = resources.revision(service, name, 2, service.template, owner("Configuration", "hello", "cfg-uid"))
    obj["metadata"]["uid"] = "rev-uid"
    return obj


def test_revision_keeps_the_template_and_records_its_generation_and_digest(service: Service) -> None:
    obj = revision_obj(service)
    meta = obj["metadata"]
    assert meta["labels"][CONFIGURATION_GENERATION] == "2"
    assert meta["labels"]["tier"] == "web"
    assert meta["annotations"][DIGEST] == service.template.digest()
    assert meta["ownerReferences"][0]["uid"] == "cfg-uid"
    assert obj["spec"]["containerConcurrency"] == 4
    assert obj["spec"]["timeoutSeconds"] == 120


def test_a_revision_object_parses_back_to_its_template(service: Service) -> None:
    template = _template_of(revision_obj(service))
    assert template is not None
    assert template.container == service.template.container
    assert template.container_concurrency == 4
    configuration = Configuration("hello")
    configuration.restore("hello-00002", template, service.template.digest(), 2)
    # The same template again makes no new revision after a restart; a changed one makes -00003.
    assert configuration.apply(service.template) == ("hello-00002", False)


def test_deployment_runs_the_user_container_behind_the_queue_proxy(service: Service) -> None:
    config = ControllerConfig(queue_sidecar_image="registry.example/serving:1", drain_seconds=30.0)
    deployment = resources.deployment(service, revision_obj(service), service.template, 1, config)
    assert deployment["metadata"]["name"] == "hello-00002-deployment"
    assert deployment["spec"]["selector"]["matchLabels"] == {REVISION_UID: "rev-uid"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 150  # timeout 120 + drain 30
    user, queue = pod["containers"]
    assert "readinessProbe" not in user  # the queue-proxy probes the app
    assert user["lifecycle"]["preStop"]["httpGet"] == {"port": 8022, "path": "/wait-for-drain"}
    assert user["resources"] == {"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}}
    env = {e["name"]: e.get("value") for e in user["env"]}
    assert env["PORT"] == "9000"
    assert env["K_REVISION"] == "hello-00002"
    assert env["TARGET"] == "World"
    assert queue["name"] == "queue-proxy"
    assert queue["image"] == "registry.example/serving:1"
    assert queue["readinessProbe"]["httpGet"]["port"] == 8012
    # The sidecar's environment is exactly what the queue-proxy's contract loads.
    qenv = {e["name"]: e.get("value") for e in queue["env"]}
    qenv["SERVING_POD"] = "hello-00002-deployment-abc"
    qenv["SERVING_POD_IP"] = "10.0.0.7"
    loaded = load_config({k: v for k, v in qenv.items() if v is not None})
    assert loaded.identity.pod_ip == "10.0.0.7"
    assert loaded.proxy.user_port == 9000
    assert loaded.proxy.container_concurrency == 4
    assert loaded.proxy.timeout == 120.0
    assert loaded.proxy.readiness_probe.path == "/healthz"
    refs = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in queue["env"] if "valueFrom" in e}
    assert refs["SERVING_POD"] == "metadata.name"
    assert refs["SERVING_POD_IP"] == "status.podIP"


def test_the_readiness_probe_and_the_queue_proxy_share_the_revisions_probe_token(service: Service) -> None:
    """With a probe secret, the sidecar requires the revision's token and the kubelet's probe sends it; the
    token is the one the activator derives for the same revision, and no other revision's."""
    config = ControllerConfig(probe_secret="s3cret")
    deployment = resources.deployment(service, revision_obj(service), service.template, 1, config)
    queue = deployment["spec"]["template"]["spec"]["containers"][1]
    token = probe_token("s3cret", "team", "hello-00002")
    assert token
    assert token != probe_token("s3cret", "team", "hello-00001")
    assert {e["name"]: e.get("value") for e in queue["env"]}["SERVING_PROBE_TOKEN"] == token
    assert queue["readinessProbe"]["httpGet"]["httpHeaders"] == [
        {"name": "K-Network-Probe", "value": "queue"},
        {"name": "K-Network-Probe-Token", "value": token},
    ]
    plain = resources.deployment(service, revision_obj(service), service.template, 1, ControllerConfig())
    plain_queue = plain["spec"]["template"]["spec"]["containers"][1]
    assert plain_queue["readinessProbe"]["httpGet"]["httpHeaders"] == [
        {"name": "K-Network-Probe", "value": "queue"}
    ]


def test_every_object_is_valid_kubernetes(service: Service) -> None:
    config = ControllerConfig()
    rev = revision_obj(service)
    for obj in (
        resources.deployment(service, rev, service.template, 1, config),
        resources.private_service(service, rev),
    ):
        kubernetes_validate.validate(obj, "1.37", strict=True)


def test_the_cluster_local_service_is_an_alias_of_the_router_owned_by_the_route(service: Service) -> None:
    route_obj = owner("Route", "hello", "route-uid")
    config = ControllerConfig(system_namespace="serving-system", cluster_domain="corp.internal")
    obj = resources.cluster_local_service(service, route_obj, config)
    assert (obj["apiVersion"], obj["kind"]) == ("v1", "Service")
    assert (obj["metadata"]["namespace"], obj["metadata"]["name"]) == ("team", "hello")
    assert obj["spec"]["type"] == "ExternalName"
    assert obj["spec"]["externalName"] == "router.serving-system.svc.corp.internal"
    assert obj["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}]
    assert obj["metadata"]["labels"]["serving.knative.dev/service"] == "hello"
    assert obj["metadata"]["labels"]["serving.knative.dev/route"] == "hello"
    [ref] = obj["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("Route", "hello", "route-uid", True)
    assert resources.controlled_by(obj, route_obj)
    kubernetes_validate.validate(obj, "1.37", strict=True)
    renamed = resources.cluster_local_service(service, route_obj, ControllerConfig(router_service="ingress"))
    assert renamed["spec"]["externalName"] == "ingress.knative-serving.svc.cluster.local"


@pytest.mark.parametrize(
    ("references", "controlled"),
    [
        pytest.param([{"uid": "route-uid", "controller": True}], True, id="the-route"),
        pytest.param([], False, id="no-owner"),
        pytest.param([{"uid": "other-uid", "controller": True}], False, id="another-route"),
        pytest.param([{"uid": "route-uid", "controller": False}], False, id="owner-not-controller"),
    ],
)
def test_only_a_service_the_route_controls_is_the_routes(
    references: list[dict[str, Any]], controlled: bool
) -> None:
    existing = {"metadata": {"name": "hello", "namespace": "team", "ownerReferences": references}}
    assert resources.controlled_by(existing, owner("Route", "hello", "route-uid")) is controlled


def test_route_objects_become_the_routing_table() -> None:
    route = {
        "metadata": {"name": "hello", "namespace": "team"},
        "status": {
            "traffic": [
                {"revisionName": "hello-00002", "percent": 80, "latestRevision": True},
                {"revisionName": "hello-00001", "percent": 20, "tag": "old"},
            ]
        },
    }
    table = route_table(
        [route, {"metadata": {"name": "empty", "namespace": "team"}}], "example.com", "cluster.local"
    )
    main = table.lookup("hello.team.example.com")
    assert main is not None
    tagged = table.lookup("old-hello.team.example.com:80")
    assert tagged is not None
    assert tagged.pick(random.Random(1)) == RevisionKey("team", "hello-00001")
    for name in ("hello.team.svc.cluster.local:80", "hello.team.svc", "hello.team"):
        assert table.lookup(name) is main, name
    for name in ("old-hello.team.svc.cluster.local", "old-hello.team.svc:8080", "old-hello.team"):
        assert table.lookup(name) is tagged, name
    empty = table.lookup("empty.team.example.com")  # no resolved traffic yet: the router answers 503
    assert empty is not None
    assert empty.pick(random.Random(1)) is None


def test_traffic_status_names_the_resolved_revisions(service: Service) -> None:
    targets = [RouteTarget("hello-00002", 80, None), RouteTarget("hello-00001", 20, "old")]
    status = resources.traffic_status(service, targets, {"old": "http://old-hello.team.example.com"})
    assert status == [
        {"revisionName": "hello-00002", "percent": 80, "latestRevision": True},
        {
            "revisionName": "hello-00001",
            "percent": 20,
            "latestRevision": False,
            "tag": "old",
            "url": "http://old-hello.team.example.com",
        },
    ]


def test_pods_come_from_endpoint_slices_and_terminating_ones_are_left_out() -> None:
    slices = [
        {
            "endpoints": [
                {"addresses": ["10.244.0.5"], "conditions": {"ready": True}, "targetRef": {"name": "p1"}},
                {
                    "addresses": ["10.244.0.6"],
                    "conditions": {"ready": True, "terminating": True},
                    "targetRef": {"name": "p2"},
                },
                {"addresses": ["10.244.0.7"], "conditions": {"ready": False}, "targetRef": {"name": "p3"}},
                {"addresses": [], "conditions": {"ready": True}},
            ]
        }
    ]
    pods = pods_of(slices)
    assert [(p.name, p.host, p.ready, p.port, p.stats_port) for p in pods] == [
        ("p1", "10.244.0.5", True, 8012, 9090),
        ("p3", "10.244.0.7", False, 8012, 9090),
    ]


def test_a_revision_object_as_the_data_plane_sees_it(service: Service) -> None:
    obj = revision_obj(service)
    obj["status"] = {
        "scaler": {
            "desired_pods": 2,
            "mode": "Serve",
            "stable_concurrency": 1.0,
            "panic_concurrency": 1.0,
            "panic": False,
            "excess_burst_capacity": 100.0,
            "activators": 1,
        }
    }
    revision = revision_of(obj)
    assert revision.key == RevisionKey("team", "hello-00002")
    assert revision.container_concurrency == 4
    assert revision.timeout_seconds == 120.0
    assert revision.annotations["autoscaling.knative.dev/target"] == "10"
    status = scaler_status_of(obj)
    assert status is not None
    assert status.mode == "Serve"
    assert scaler_status_of({"status": {"scaler": {"mode": "Sideways"}}}) is None


def test_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    before = [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    assert condition("Ready", "True", "", "", before)["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert condition("Ready", "False", "X", "m", before)["lastTransitionTime"] != "2026-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("configuration", "route", "ready"),
    [
        pytest.param(("True", "", ""), ("True", "", ""), ("True", "", ""), id="both-ready"),
        pytest.param(
            ("True", "", ""), ("False", "NotOwned", "taken"), ("False", "NotOwned", "taken"), id="name-taken"
        ),
        pytest.param(
            ("Unknown", "RevisionMissing", "m"),
            ("False", "NotOwned", "taken"),
            ("False", "NotOwned", "taken"),
            id="name-taken-while-deploying",
        ),
        pytest.param(
            ("False", "InvalidSpec", "bad"),
            ("False", "NotOwned", "taken"),
            ("False", "InvalidSpec", "bad"),
            id="both-failing-configuration-first",
        ),
        pytest.param(
            ("True", "", ""),
            ("Unknown", "RevisionMissing", ""),
            ("Unknown", "RevisionMissing", ""),
            id="route-pending",
        ),
    ],
)
def test_a_service_is_ready_as_its_worst_condition(
    configuration: tuple[str, str, str], route: tuple[str, str, str], ready: tuple[str, str, str]
) -> None:
    assert worst(configuration, route) == ready


def test_the_crds_name_knatives_resources() -> None:
    docs = list(yaml.safe_load_all((ROOT / "charts/serving/crds/serving.knative.dev.yaml").read_text()))
    names = {d["spec"]["names"]["kind"]: d["spec"]["names"] for d in docs}
    assert set(names) == {"Service", "Configuration", "Revision", "Route"}
    assert "ksvc" in names["Service"]["shortNames"]
    for doc in docs:
        assert doc["spec"]["group"] == "serving.knative.dev"
        assert doc["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_problems_of_an_api_object_name_the_object_not_a_file() -> None:
    doc = copy.deepcopy(SERVICE_DOC)
    doc["spec"]["template"]["spec"]["containerConcurrency"] = -3
    with pytest.raises(ServiceFileError) as caught:
        parse_object(doc)
    assert caught.value.problems == [
        "Service team/hello: spec.template.spec.containerConcurrency: -3 is out of range: must be 0-1000 "
        "(Knative's default limit)"
    ]


def test_a_multi_container_revision_keeps_its_sidecars_beside_the_serving_container() -> None:
    doc = copy.deepcopy(SERVICE_DOC)
    serving = doc["spec"]["template"]["spec"]["containers"][0]
    serving["name"] = "app"
    sidecar = {
        "name": "proxy",
        "image": "docker.io/example/proxy",
        "env": [{"name": "MODE", "value": "x"}],
    }
    doc["spec"]["template"]["spec"]["containers"] = [sidecar, serving]  # the serving one need not be first
    multi = parse_object(doc)
    assert multi.template.container.index == 1
    assert [s.name for s in multi.template.sidecars] == ["proxy"]
    config = ControllerConfig(queue_sidecar_image="registry.example/serving:1")
    deployment = resources.deployment(multi, revision_obj(multi), multi.template, 1, config)
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", "proxy", "queue-proxy"]
    assert containers[0]["ports"][0]["containerPort"] == 9000
    proxy_env = {e["name"]: e["value"] for e in containers[1]["env"]}
    assert proxy_env == {
        "MODE": "x",
        "K_REVISION": "hello-00002",
        "K_CONFIGURATION": "hello",
        "K_SERVICE": "hello",
    }
    kubernetes_validate.validate(deployment, "1.37", strict=True)
