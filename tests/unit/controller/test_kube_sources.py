"""ContainerSources and SinkBindings on Kubernetes: a source's Deployment (owned by it, its containers given
the sink), a binding's variables applied under a field manager of their own to a workload (a Deployment,
StatefulSet, DaemonSet, or a CronJob's job template) or to a Knative Service's revision Deployments (never
the queue-proxy), taken back from a workload no binding names, and nothing written when nothing changed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from controller.kube.eventing import KubeAddresses, read_object
from controller.kube.sources import (
    BINDING_MANAGER,
    SOURCE_LABEL,
    SOURCE_MANAGER,
    Workloads,
    binding_apply,
    bound_by_us,
    current_binding,
    source_deployment,
)
from controller.reconcile.eventing import Resolved, resolve
from serving.events import ContainerSource, EventObject
from serving.kube.api import CRON_JOBS, DEPLOYMENTS, ApiError

ADDRESSES = KubeAddresses("knative-serving", "cluster.local")
BROKER = "http://broker-ingress.knative-serving.svc.cluster.local/team/default"
BROKER_REF = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}


def api_object(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "eventing.knative.dev/v1" if kind == "Broker" else "sources.knative.dev/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}", "generation": 1},
        "spec": spec,
    }


def read(obj: dict[str, Any]) -> EventObject:
    found, problems = read_object(obj)
    assert problems == []
    assert found is not None
    return found


def deployment(name: str, containers: list[dict[str, Any]], **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}", "labels": labels},
        "spec": {"template": {"spec": {"containers": containers}}},
    }


SOURCE = api_object(
    "ContainerSource",
    "heartbeats",
    {
        "template": {
            "metadata": {"labels": {"app": "heartbeats"}},
            "spec": {
                "containers": [
                    {
                        "image": "example/heartbeats",
                        "args": ["--period=1"],
                        "env": [{"name": "K_SINK", "value": "stale"}, {"name": "MODE", "value": "x"}],
                    }
                ]
            },
        },
        "sink": {"ref": BROKER_REF},
        "ceOverrides": {"extensions": {"team": "a"}},
    },
)


def test_a_container_source_runs_as_a_deployment_it_owns() -> None:
    source = read(SOURCE)
    assert isinstance(source, ContainerSource)
    env = {"K_SINK": BROKER, "K_CE_OVERRIDES": '{"extensions":{"team":"a"}}'}
    body = source_deployment(SOURCE, source, env)
    assert body["metadata"]["name"] == "heartbeats-deployment"
    assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-heartbeats"
    assert body["metadata"]["ownerReferences"][0]["kind"] == "ContainerSource"
    assert body["spec"]["replicas"] == 1
    assert body["spec"]["selector"] == {"matchLabels": {SOURCE_LABEL: "heartbeats"}}
    pod = body["spec"]["template"]
    assert pod["metadata"]["labels"] == {"app": "heartbeats", SOURCE_LABEL: "heartbeats"}
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "heartbeats-0", "Knative names an unnamed container <source>-<index>"
    assert container["image"] == "example/heartbeats"
    assert container["env"] == [
        {"name": "MODE", "value": "x"},
        {"name": "K_SINK", "value": BROKER},
        {"name": "K_CE_OVERRIDES", "value": '{"extensions":{"team":"a"}}'},
    ]
    assert SOURCE["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == "stale", "not mutated"


def test_on_kubernetes_a_container_source_needs_an_image_not_a_command() -> None:
    no_image = api_object(
        "ContainerSource",
        "x",
        {"template": {"spec": {"containers": [{"command": ["run"]}]}}, "sink": {"ref": BROKER_REF}},
    )
    found, problems = read_object(no_image)
    assert found is None
    assert problems == ["spec.template.spec.containers[0].image: required on Kubernetes"]


def test_a_binding_subject_may_be_a_workload_but_not_a_job() -> None:
    job = api_object(
        "SinkBinding",
        "b",
        {"subject": {"apiVersion": "batch/v1", "kind": "Job", "name": "j"}, "sink": {"ref": BROKER_REF}},
    )
    found, problems = read_object(job)
    assert found is None
    assert problems == [
        "spec.subject: batch/v1 Job 'j' is not supported on Kubernetes: a subject here must be a "
        "serving.knative.dev/v1 Service or apps/v1 DaemonSet or apps/v1 Deployment or apps/v1 StatefulSet or "
        "batch/v1 CronJob, the kinds the controller resolves; a Job's pod template cannot change once the "
        "Job exists: bind the CronJob that makes it, or give the Job K_SINK itself"
    ]
    for api_version, kind in [("apps/v1", "StatefulSet"), ("apps/v1", "DaemonSet"), ("batch/v1", "CronJob")]:
        subject = {"apiVersion": api_version, "kind": kind, "name": "w"}
        read(api_object("SinkBinding", "b", {"subject": subject, "sink": {"ref": BROKER_REF}}))


def test_the_apply_body_owns_only_the_variables() -> None:
    resource, body = binding_apply(("Deployment", "team", "worker"), ["main"], {"K_SINK": BROKER})
    assert resource is DEPLOYMENTS
    assert body == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "worker", "namespace": "team"},
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "main", "env": [{"name": "K_SINK", "value": BROKER}]}]}
            }
        },
    }
    _, empty = binding_apply(("Deployment", "team", "worker"), [], {})
    assert "spec" not in empty, "an empty apply takes back what it owned"


def test_a_cron_jobs_binding_goes_into_its_job_template() -> None:
    resource, body = binding_apply(("CronJob", "team", "beat"), ["main"], {"K_SINK": BROKER})
    assert resource is CRON_JOBS
    assert body == {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "beat", "namespace": "team"},
        "spec": {
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [{"name": "main", "env": [{"name": "K_SINK", "value": BROKER}]}]
                        }
                    }
                }
            }
        },
    }


def test_current_binding_reads_only_the_binding_variables() -> None:
    live = deployment(
        "worker",
        [
            {"name": "main", "env": [{"name": "K_SINK", "value": BROKER}, {"name": "OTHER", "value": "1"}]},
            {"name": "side"},
        ],
    )
    assert current_binding(live, ["main", "side"], "Deployment") == {"main": {"K_SINK": BROKER}, "side": {}}


class RecordingKube:
    def __init__(self, refuse: int | None = None) -> None:
        self.applied: list[tuple[str, dict[str, Any]]] = []
        self.refuse = refuse

    async def apply(self, resource: Any, obj: dict[str, Any], *, manager: str) -> dict[str, Any]:
        if self.refuse is not None:
            raise ApiError(self.refuse, "Invalid", "spec.template.spec.containers[0].image: Required value")
        self.applied.append((manager, obj))
        return obj


def binding(name: str, subject: Mapping[str, Any]) -> dict[str, Any]:
    return api_object("SinkBinding", name, {"subject": subject, "sink": {"ref": BROKER_REF}})


def resolved_with(
    *objs: dict[str, Any],
    workloads: Sequence[tuple[str, str, str]] | Mapping[tuple[str, str, str], Mapping[str, str]] = (),
) -> Resolved:
    """`workloads`: their (kind, namespace, name), with their labels where those matter."""
    events = [read(api_object("Broker", "default", {})), *(read(o) for o in objs)]
    labels = workloads if isinstance(workloads, Mapping) else {key: {} for key in workloads}
    return resolve(events, {("team", "display")}, [], ADDRESSES, labels)


async def test_bindings_reach_a_deployment_and_a_services_user_containers() -> None:
    kube = RecordingKube()
    workloads = Workloads(kube)  # type: ignore[arg-type]
    worker = deployment("worker", [{"name": "main"}])
    revision = deployment(
        "display-00001-deployment",
        [{"name": "user-container"}, {"name": "queue-proxy"}],
        **{"serving.knative.dev/service": "display"},
    )
    other = deployment("unrelated", [{"name": "main"}])
    deployments = {
        ("team", "worker"): worker,
        ("team", revision["metadata"]["name"]): revision,
        ("team", "unrelated"): other,
    }
    resolved = resolved_with(
        binding("to-worker", {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"}),
        binding("to-display", {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "display"}),
        workloads=[("Deployment", *key) for key in deployments],
    )
    assert resolved.not_ready == {}
    assert resolved.sinks[("SinkBinding", "team", "to-worker")] == BROKER
    await workloads.apply(resolved, {}, {"Deployment": deployments})
    applied = {obj["metadata"]["name"]: (manager, obj) for manager, obj in kube.applied}
    assert set(applied) == {"worker", "display-00001-deployment"}
    assert all(manager == BINDING_MANAGER for manager, _ in applied.values())
    containers = applied["display-00001-deployment"][1]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["user-container"], "the queue-proxy gets no K_SINK"
    assert containers[0]["env"] == [{"name": "K_SINK", "value": BROKER}]

    # Once the Deployments carry the variables, a pass writes nothing.
    kube.applied.clear()
    for key, obj in deployments.items():
        if key[1] != "unrelated":
            for c in obj["spec"]["template"]["spec"]["containers"]:
                if c["name"] != "queue-proxy":
                    c["env"] = [{"name": "K_SINK", "value": BROKER}]
    await workloads.apply(resolved, {}, {"Deployment": deployments})
    assert kube.applied == []


async def test_a_deployment_no_binding_names_gets_the_variables_taken_back() -> None:
    kube = RecordingKube()
    workloads = Workloads(kube)  # type: ignore[arg-type]
    worker = deployment("worker", [{"name": "main", "env": [{"name": "K_SINK", "value": BROKER}]}])
    worker["metadata"]["managedFields"] = [{"manager": BINDING_MANAGER, "operation": "Apply"}]
    assert bound_by_us(worker)
    await workloads.apply(resolved_with(), {}, {"Deployment": {("team", "worker"): worker}})
    assert kube.applied == [(BINDING_MANAGER, binding_apply(("Deployment", "team", "worker"), [], {})[1])]


async def test_a_stateful_set_and_a_cron_job_are_bound_and_taken_back() -> None:
    """Each kind's pod template gets the variables where that kind keeps it; a workload of another kind with
    the same name is left alone; once no binding names them, what the binding applied is taken back."""
    kube = RecordingKube()
    workloads = Workloads(kube)  # type: ignore[arg-type]
    db: dict[str, Any] = {
        "metadata": {"name": "db", "namespace": "team"},
        "spec": {"template": {"spec": {"containers": [{"name": "main"}]}}},
    }
    beat: dict[str, Any] = {
        "metadata": {"name": "beat", "namespace": "team"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "main"}]}}}}},
    }
    same_name = deployment("beat", [{"name": "main"}])
    live = {
        "StatefulSet": {("team", "db"): db},
        "CronJob": {("team", "beat"): beat},
        "Deployment": {("team", "beat"): same_name},
    }
    resolved = resolved_with(
        binding("to-db", {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"}),
        binding("to-beat", {"apiVersion": "batch/v1", "kind": "CronJob", "name": "beat"}),
        workloads=[(kind, *key) for kind, objects in live.items() for key in objects],
    )
    assert resolved.not_ready == {}
    await workloads.apply(resolved, {}, live)
    env = [{"name": "K_SINK", "value": BROKER}]
    assert sorted((o["kind"], o["metadata"]["name"]) for _, o in kube.applied) == [
        ("CronJob", "beat"),
        ("StatefulSet", "db"),
    ]
    for _, body in kube.applied:
        if body["kind"] == "CronJob":
            template = body["spec"]["jobTemplate"]["spec"]["template"]
        else:
            template = body["spec"]["template"]
        assert template["spec"]["containers"] == [{"name": "main", "env": env}]

    # Bound now: nothing to write. Then the bindings go: both are taken back, by their own kinds.
    db["spec"]["template"]["spec"]["containers"][0]["env"] = env
    beat["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"] = env
    kube.applied.clear()
    await workloads.apply(resolved, {}, live)
    assert kube.applied == []
    for obj in (db, beat):
        obj["metadata"]["managedFields"] = [{"manager": BINDING_MANAGER, "operation": "Apply"}]
    await workloads.apply(resolved_with(), {}, live)
    assert sorted((m, o["kind"], "spec" in o) for m, o in kube.applied) == [
        (BINDING_MANAGER, "CronJob", False),
        (BINDING_MANAGER, "StatefulSet", False),
    ]


def test_a_selector_binds_every_workload_of_its_kind_whose_labels_match() -> None:
    selected = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "selector": {
            "matchLabels": {"app": "beat"},
            "matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["test"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        },
    }
    resolved = resolved_with(
        binding("by-label", selected),
        workloads={
            ("Deployment", "team", "a"): {"app": "beat"},
            ("Deployment", "team", "b"): {"app": "beat", "tier": "prod"},
            ("Deployment", "team", "c"): {"app": "beat", "tier": "test"},
            ("Deployment", "team", "d"): {"app": "beat", "legacy": "yes"},
            ("Deployment", "team", "e"): {"app": "other"},
            ("Deployment", "elsewhere", "f"): {"app": "beat"},
            ("StatefulSet", "team", "g"): {"app": "beat"},
        },
    )
    assert set(resolved.workload_bindings) == {("Deployment", "team", "a"), ("Deployment", "team", "b")}
    assert resolved.sinks[("SinkBinding", "team", "by-label")] == BROKER
    nothing_yet = resolved_with(binding("by-label", selected))
    assert nothing_yet.not_ready == {}, "a selector that matches nothing yet is not an error"


async def test_a_selected_revision_deployment_gets_no_variables_in_its_queue_proxy() -> None:
    kube = RecordingKube()
    revision = deployment(
        "display-00001-deployment",
        [{"name": "user-container"}, {"name": "queue-proxy"}],
        **{"serving.knative.dev/service": "display", "team": "blue"},
    )
    selected = {"apiVersion": "apps/v1", "kind": "Deployment", "selector": {"matchLabels": {"team": "blue"}}}
    key = ("Deployment", "team", "display-00001-deployment")
    resolved = resolved_with(binding("by-team", selected), workloads={key: {"team": "blue"}})
    await Workloads(kube).apply(resolved, {}, {"Deployment": {key[1:]: revision}})  # type: ignore[arg-type]
    ((_, body),) = kube.applied
    assert [c["name"] for c in body["spec"]["template"]["spec"]["containers"]] == ["user-container"]


def test_a_selector_is_checked_as_the_api_server_does() -> None:
    def problems(subject: dict[str, Any]) -> list[str]:
        obj = api_object("SinkBinding", "b", {"subject": subject, "sink": {"ref": BROKER_REF}})
        return read_object(obj)[1]

    deployments = {"apiVersion": "apps/v1", "kind": "Deployment"}
    assert problems({**deployments, "name": "w", "selector": {"matchLabels": {"a": "b"}}}) == [
        "spec.subject.name: not with a selector: a subject is named or selected (Knative rule)"
    ]
    bad = {
        "matchLabels": {"app": "-no-"},
        "matchExpressions": [
            {"key": "a", "operator": "Matches", "values": ["x"]},
            {"key": "b", "operator": "In"},
            {"key": "c", "operator": "Exists", "values": ["x"]},
        ],
    }
    found = problems({**deployments, "selector": bad})
    assert [p.split(":")[0] for p in found] == [
        "spec.subject.selector.matchLabels.app",
        "spec.subject.selector.matchExpressions[0].operator",
        "spec.subject.selector.matchExpressions[1].values",
        "spec.subject.selector.matchExpressions[2].values",
    ], found
    service = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "selector": {"matchLabels": {}}}
    assert problems(service) == [
        "spec.subject.selector: is not supported on Kubernetes for a Knative Service: name it (`name`); a "
        "selector selects Deployments, StatefulSets, DaemonSets or CronJobs"
    ]


def test_a_missing_subject_is_a_reason() -> None:
    resolved = resolved_with(binding("lost", {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gone"}))
    assert resolved.not_ready == {
        ("SinkBinding", "team", "lost"): "spec.subject: Deployment team/gone not found"
    }


async def test_a_source_deployment_is_applied_once_and_ready_when_available() -> None:
    kube = RecordingKube()
    workloads = Workloads(kube)  # type: ignore[arg-type]
    resolved = resolved_with(SOURCE)
    sources = {("team", "heartbeats"): SOURCE}
    await workloads.apply(resolved, sources, {})
    assert [(m, o["metadata"]["name"]) for m, o in kube.applied] == [
        (SOURCE_MANAGER, "heartbeats-deployment")
    ]
    assert workloads.not_ready == {
        (
            "ContainerSource",
            "team",
            "heartbeats",
        ): "Deployment team/heartbeats-deployment has no available pod yet"
    }
    live = dict(kube.applied[0][1], status={"availableReplicas": 1})
    kube.applied.clear()
    await workloads.apply(resolved, sources, {"Deployment": {("team", "heartbeats-deployment"): live}})
    assert kube.applied == [], "the same body is not applied again"
    assert workloads.not_ready == {}


async def test_a_refused_source_deployment_is_a_reason_not_a_stalled_pass() -> None:
    workloads = Workloads(RecordingKube(refuse=422))  # type: ignore[arg-type]
    await workloads.apply(resolved_with(SOURCE), {("team", "heartbeats"): SOURCE}, {})
    (reason,) = workloads.not_ready.values()
    assert reason.startswith("Deployment team/heartbeats-deployment refused: spec.template")
