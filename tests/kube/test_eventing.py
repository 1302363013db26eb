"""Eventing on a real control plane: Knative Eventing's YAML (Broker, Trigger, PingSource) applied through
the API gets Knative's status from the controller (a Broker's address, a Trigger's subscriber URI, a
source's sink, `Ready` with the reason when not), the controller serves the resolved objects to the
eventing component, and an event posted to the Broker's ingress reaches the Knative Service its Trigger
names, woken from zero through the router and the activator, while an event the filter refuses reaches
nobody.

The eventing component runs on the host (`tests/kube/platform.py`); with no cluster DNS here, it connects
the Services' in-cluster addresses to the router (`INGRESS_ADDRESS`), keeping their Host, as it would
through the ExternalName Service in a cluster.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controller.kube.sources import BINDING_MANAGER
from serving.kube.api import (
    BROKERS,
    CONTAINER_SOURCES,
    CRON_JOBS,
    DEPLOYMENTS,
    PING_SOURCES,
    SERVICES,
    SINK_BINDINGS,
    STATEFUL_SETS,
    TRIGGERS,
    ApiError,
    Kube,
)
from tests.kube.platform import SYSTEM_NAMESPACE, Platform, eventually, install_crds, ready, service_ready
from tests.records import json_lines

pytestmark = pytest.mark.kube

NS = "default"
RECORDER = Path(__file__).resolve().parent / "apps"
ENV_RECORDER = [sys.executable, str(RECORDER / "envrecorder.py")]
BROKER_HOST = f"broker-ingress.{SYSTEM_NAMESPACE}.svc.cluster.local"


@pytest.fixture(scope="module")
def platform(kube_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    log_dir = tmp_path_factory.mktemp("eventing-platform")
    asyncio.run(install_crds(Path(kube_cluster.kubeconfig), SYSTEM_NAMESPACE))
    running = Platform(kubeconfig=Path(kube_cluster.kubeconfig), log_dir=log_dir, eventing=True)
    running.start()
    try:
        yield running
    finally:
        running.stop()
        print(running.logs())


def recorder_service(name: str, record_file: Path) -> dict[str, Any]:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "image": "docker.io/example/recorder",
                            "command": [sys.executable, "recorder.py"],
                            "workingDir": str(RECORDER),
                            "env": [{"name": "RECORD_FILE", "value": str(record_file)}],
                        }
                    ]
                }
            }
        },
    }


def service_ref(name: str) -> dict[str, str]:
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": name}


BROKER_REF = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}


def eventing_object(kind: str, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    api = "eventing.knative.dev/v1" if kind in ("Broker", "Trigger") else "sources.knative.dev/v1"
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": name, "namespace": NS, **meta},
        "spec": spec,
    }


def condition(obj: dict[str, Any]) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), {})


async def post_event(platform: Platform, event_id: str, event_type: str, data: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{platform.eventing_port}/{NS}/default",
            data=data.encode(),
            headers={
                "Host": BROKER_HOST,
                "Content-Type": "text/plain",
                "ce-specversion": "1.0",
                "ce-id": event_id,
                "ce-source": "tests/kube",
                "ce-type": event_type,
            },
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp,
    ):
        return resp.status


async def test_an_event_wakes_the_triggered_service_from_zero(
    kube: Kube, platform: Platform, tmp_path: Path
) -> None:
    record = tmp_path / "events.jsonl"
    await kube.create(SERVICES, NS, recorder_service("recorder", record))
    await kube.create(BROKERS, NS, eventing_object("Broker", "default", {}))
    await kube.create(
        TRIGGERS,
        NS,
        eventing_object(
            "Trigger",
            "greetings",
            {
                "broker": "default",
                "filter": {"attributes": {"type": "dev.example.greeting"}},
                "subscriber": {
                    "ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "recorder"}
                },
            },
        ),
    )
    await eventually(lambda: service_ready(kube, "recorder"), 90, "the recorder Service ready", platform)

    async def broker_ready() -> dict[str, Any] | None:
        obj = await kube.get(BROKERS, NS, "default")
        return obj if ready(obj) else None

    async def trigger_ready() -> dict[str, Any] | None:
        obj = await kube.get(TRIGGERS, NS, "greetings")
        return obj if ready(obj) else None

    broker = await eventually(broker_ready, 60, "the Broker ready", platform)
    assert broker["status"]["address"]["url"] == f"http://{BROKER_HOST}/{NS}/default"
    trigger = await eventually(trigger_ready, 60, "the Trigger ready", platform)
    assert trigger["status"]["subscriberUri"] == f"http://recorder.{NS}.svc.cluster.local"

    async def at_zero() -> bool:
        deployment = await kube.get(DEPLOYMENTS, NS, "recorder-00001-deployment")
        return int(deployment["spec"].get("replicas") or 0) == 0

    await eventually(at_zero, 120, "the recorder scaled to zero", platform)

    # The eventing component may still be reading its first feed: a 404 (unknown Broker) is retried.
    wanted, unwanted = str(uuid.uuid4()), str(uuid.uuid4())

    async def accepted() -> bool:
        return await post_event(platform, wanted, "dev.example.greeting", "hello from the cluster") == 202

    await eventually(accepted, 30, "the Broker ingress accepting the event", platform)
    assert await post_event(platform, unwanted, "dev.example.other", "for nobody") == 202

    async def delivered() -> list[dict[str, Any]]:
        return [e for e in json_lines(record) if e["attributes"].get("id") == wanted]

    found = await eventually(delivered, 90, "the event delivered to the recorder", platform)
    assert found[0]["attributes"]["type"] == "dev.example.greeting"
    assert found[0]["data"] == "hello from the cluster"
    assert found[0]["host"] == f"recorder.{NS}.svc.cluster.local"
    deployment = await kube.get(DEPLOYMENTS, NS, "recorder-00001-deployment")
    assert int(deployment["spec"].get("replicas") or 0) >= 1, "the event woke the revision"
    assert all(e["attributes"].get("id") != unwanted for e in json_lines(record)), "the filter let it through"


async def make_default_broker(kube: Kube) -> None:
    try:  # the first test may have made it already
        await kube.create(BROKERS, NS, eventing_object("Broker", "default", {}))
    except ApiError as exc:
        if not exc.conflict:
            raise


async def test_status_says_what_is_missing_or_invalid(kube: Kube, platform: Platform) -> None:
    await make_default_broker(kube)  # the PingSource's sink
    await kube.create(
        TRIGGERS,
        NS,
        eventing_object(
            "Trigger",
            "to-nowhere",
            {
                "broker": "default",
                "subscriber": {
                    "ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "nope"}
                },
            },
        ),
    )
    await kube.create(
        TRIGGERS,
        NS,
        eventing_object("Trigger", "no-subscriber", {"broker": "default"}),
    )
    await kube.create(
        PING_SOURCES,
        NS,
        eventing_object(
            "PingSource",
            "every-minute",
            {
                "schedule": "* * * * *",
                "data": '{"message": "ping"}',
                "sink": {
                    "ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}
                },
            },
        ),
    )

    async def reason(resource: Any, name: str, wanted: str) -> dict[str, Any] | None:
        try:
            obj = await kube.get(resource, NS, name)
        except ApiError:
            return None
        found = condition(obj)
        return found if found.get("status") == wanted else None

    missing = await eventually(lambda: reason(TRIGGERS, "to-nowhere", "False"), 60, "to-nowhere not ready")
    assert missing["reason"] == "NotResolved"
    assert "spec.subscriber: Service default/nope not found" in missing["message"]

    invalid = await eventually(
        lambda: reason(TRIGGERS, "no-subscriber", "False"), 60, "no-subscriber invalid"
    )
    assert invalid["reason"] == "InvalidSpec"
    assert "spec.subscriber" in invalid["message"]

    await eventually(lambda: reason(PING_SOURCES, "every-minute", "True"), 60, "the PingSource ready")
    ping = await kube.get(PING_SOURCES, NS, "every-minute")
    assert ping["status"]["sinkUri"] == f"http://{BROKER_HOST}/{NS}/default"


async def test_the_feed_needs_the_token(platform: Platform) -> None:
    url = f"http://127.0.0.1:{platform.eventing_feed_port}/v1/eventing?watch=true"
    async with aiohttp.ClientSession() as session:

        async def refused() -> int | None:
            async with session.get(url, headers={"Serving-Eventing-Token": "wrong"}) as resp:
                return resp.status if resp.status != 503 else None

        assert await eventually(refused, 30, "the feed answering", platform) == 403


def env_recorder(record_file: Path) -> dict[str, Any]:
    return {
        "name": "main",
        "image": "docker.io/example/env-recorder",
        "command": ENV_RECORDER,
        "env": [{"name": "RECORD_FILE", "value": str(record_file)}],
    }


def recorder_workload(
    kind: str, name: str, record_file: Path, *, replicas: int, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Deployment or StatefulSet of `env_recorder` pods labelled `app: name` (and `labels` on the workload
    itself)."""
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [env_recorder(record_file)]},
        },
    }
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
        "spec": spec,
    }


def sink_of(container: dict[str, Any]) -> str | None:
    """The `K_SINK` value in a container's env, if any."""
    return next((e.get("value") for e in container.get("env") or [] if e["name"] == "K_SINK"), None)


def started_with(path: Path, sink: str) -> list[dict[str, Any]]:
    """The lines of pods that started with `sink` as their K_SINK."""
    return [line for line in json_lines(path) if line.get("K_SINK") == sink]


async def test_a_container_source_runs_as_a_deployment_with_its_sink(
    kube: Kube, platform: Platform, tmp_path: Path
) -> None:
    """The controller makes the source's Deployment, owned by it, whose pod starts with `K_SINK` (the Broker's
    in-cluster address) and `K_CE_OVERRIDES`; the source is Ready once that pod is available, and deleting
    the source deletes its Deployment. (The pod cannot post to its sink here: the test cluster has no DNS;
    the local suite sends a ContainerSource's events end to end.)"""
    await make_default_broker(kube)
    record = tmp_path / "source.jsonl"
    await kube.create(
        CONTAINER_SOURCES,
        NS,
        eventing_object(
            "ContainerSource",
            "heartbeats",
            {
                "template": {"spec": {"containers": [env_recorder(record)]}},
                "sink": {"ref": BROKER_REF},
                "ceOverrides": {"extensions": {"origin": "cluster"}},
            },
        ),
    )

    async def source_ready() -> dict[str, Any] | None:
        obj = await kube.get(CONTAINER_SOURCES, NS, "heartbeats")
        return obj if ready(obj) else None

    source = await eventually(source_ready, 90, "the ContainerSource ready", platform)
    assert source["status"]["sinkUri"] == f"http://{BROKER_HOST}/{NS}/default"
    deployment = await kube.get(DEPLOYMENTS, NS, "heartbeats-deployment")
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("ContainerSource", "heartbeats")

    async def pod_started() -> list[dict[str, Any]]:
        return started_with(record, f"http://{BROKER_HOST}/{NS}/default")

    lines = await eventually(pod_started, 60, "the source's pod started with K_SINK", platform)
    assert json.loads(lines[0]["K_CE_OVERRIDES"]) == {"extensions": {"origin": "cluster"}}

    await kube.delete(CONTAINER_SOURCES, NS, "heartbeats")

    async def deployment_gone() -> bool:
        try:
            await kube.get(DEPLOYMENTS, NS, "heartbeats-deployment")
        except ApiError as exc:
            return exc.not_found
        return False

    await eventually(deployment_gone, 60, "the source's Deployment garbage-collected", platform)


async def test_a_sink_binding_gives_a_deployment_its_sink_and_takes_it_back(
    kube: Kube, platform: Platform, tmp_path: Path
) -> None:
    """A SinkBinding whose subject is a Deployment: the controller applies `K_SINK` to the Deployment's
    containers under a field manager of its own, the rolled pod starts with it, and deleting the binding
    takes it back (and nothing else: the Deployment's own variable stays)."""
    record = tmp_path / "worker.jsonl"
    await kube.create(
        DEPLOYMENTS,
        NS,
        recorder_workload("Deployment", "worker", record, replicas=1),
    )
    sink = "http://events.example.com/ingest"
    await kube.create(
        SINK_BINDINGS,
        NS,
        eventing_object(
            "SinkBinding",
            "bind-worker",
            {
                "subject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"},
                "sink": {"uri": sink},
            },
        ),
    )

    async def binding_ready() -> dict[str, Any] | None:
        obj = await kube.get(SINK_BINDINGS, NS, "bind-worker")
        return obj if ready(obj) else None

    binding = await eventually(binding_ready, 60, "the SinkBinding ready", platform)
    assert binding["status"]["sinkUri"] == sink

    async def bound_pod() -> list[dict[str, Any]]:
        return started_with(record, sink)

    await eventually(bound_pod, 90, "a worker pod started with the binding's K_SINK", platform)
    deployment = await kube.get(DEPLOYMENTS, NS, "worker")
    managers = {f["manager"] for f in deployment["metadata"].get("managedFields") or []}
    assert BINDING_MANAGER in managers

    await kube.delete(SINK_BINDINGS, NS, "bind-worker")

    async def unbound() -> dict[str, str] | None:
        obj = await kube.get(DEPLOYMENTS, NS, "worker")
        (container,) = obj["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value", "") for e in container.get("env") or []}
        return env if "K_SINK" not in env else None

    env = await eventually(unbound, 60, "K_SINK taken back from the worker Deployment", platform)
    assert env == {"RECORD_FILE": str(record)}


@pytest.mark.timeout(300)  # a CronJob makes its Jobs on the minute
async def test_a_sink_binding_gives_a_cron_jobs_jobs_and_a_stateful_sets_pods_their_sink(
    kube: Kube, platform: Platform, tmp_path: Path
) -> None:
    """Knative's SinkBinding example binds a CronJob: the controller applies `K_SINK` to the CronJob's job
    template, and the next Job it makes starts a pod with it. A StatefulSet's pod template gets it too, and
    its rolled pod starts with it; deleting the binding takes it back. A binding with a label selector binds
    the Deployment its labels match, and not the one they do not."""
    record = tmp_path / "bound.jsonl"
    await kube.create(
        CRON_JOBS,
        NS,
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "heartbeat", "namespace": NS},
            "spec": {
                "schedule": "* * * * *",
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "spec": {"restartPolicy": "Never", "containers": [env_recorder(record)]},
                        }
                    }
                },
            },
        },
    )
    await kube.create(STATEFUL_SETS, NS, recorder_workload("StatefulSet", "keeper", record, replicas=1))
    sinks = {"CronJob": "http://events.example.com/beats", "StatefulSet": "http://events.example.com/keeper"}
    for (api_version, kind), name in (
        (("batch/v1", "CronJob"), "heartbeat"),
        (("apps/v1", "StatefulSet"), "keeper"),
    ):
        await kube.create(
            SINK_BINDINGS,
            NS,
            eventing_object(
                "SinkBinding",
                f"bind-{name}",
                {
                    "subject": {"apiVersion": api_version, "kind": kind, "name": name},
                    "sink": {"uri": sinks[kind]},
                },
            ),
        )

    for name, labels in (
        ("picked", {"app": "picked", "bind": "yes"}),
        ("passed-over", {"app": "passed-over"}),
    ):
        await kube.create(
            DEPLOYMENTS, NS, recorder_workload("Deployment", name, record, replicas=0, labels=labels)
        )
    by_label = "http://events.example.com/by-label"
    await kube.create(
        SINK_BINDINGS,
        NS,
        eventing_object(
            "SinkBinding",
            "bind-by-label",
            {
                "subject": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "selector": {"matchLabels": {"bind": "yes"}},
                },
                "sink": {"uri": by_label},
            },
        ),
    )

    async def selected() -> bool:
        picked = await kube.get(DEPLOYMENTS, NS, "picked")
        (container,) = picked["spec"]["template"]["spec"]["containers"]
        return sink_of(container) == by_label

    await eventually(selected, 60, "K_SINK in the Deployment the selector matches", platform)
    passed_over = await kube.get(DEPLOYMENTS, NS, "passed-over")
    (container,) = passed_over["spec"]["template"]["spec"]["containers"]
    assert sink_of(container) is None

    async def templates_bound() -> bool:
        cron = await kube.get(CRON_JOBS, NS, "heartbeat")
        keeper = await kube.get(STATEFUL_SETS, NS, "keeper")
        (job_container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        (set_container,) = keeper["spec"]["template"]["spec"]["containers"]
        return (sink_of(job_container), sink_of(set_container)) == (sinks["CronJob"], sinks["StatefulSet"])

    await eventually(
        templates_bound, 60, "K_SINK in the CronJob's job template and the StatefulSet's", platform
    )

    async def both_started() -> bool:
        return all(started_with(record, sink) for sink in sinks.values())

    # The CronJob makes its next Job at the next minute.
    await eventually(
        both_started, 150, "a Job's pod and the StatefulSet's pod started with their K_SINK", platform
    )
    for name in ("heartbeat", "keeper", "by-label"):
        await kube.delete(SINK_BINDINGS, NS, f"bind-{name}")
    await kube.delete(CRON_JOBS, NS, "heartbeat")

    async def unbound() -> bool:
        keeper = await kube.get(STATEFUL_SETS, NS, "keeper")
        (container,) = keeper["spec"]["template"]["spec"]["containers"]
        return sink_of(container) is None

    async def unselected() -> bool:
        picked = await kube.get(DEPLOYMENTS, NS, "picked")
        (container,) = picked["spec"]["template"]["spec"]["containers"]
        return sink_of(container) is None

    await eventually(unbound, 60, "K_SINK taken back from the StatefulSet", platform)
    await eventually(unselected, 60, "K_SINK taken back from the selected Deployment", platform)
    await kube.delete(STATEFUL_SETS, NS, "keeper")
    for name in ("picked", "passed-over"):
        await kube.delete(DEPLOYMENTS, NS, name)
