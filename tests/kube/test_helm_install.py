"""The Helm chart installed on a real control plane: `helm install` creates every object (the apiserver admits
the CRDs, the RBAC, the Deployments, the eventing StatefulSet with its claim template, PodDisruptionBudgets
and the rest); the platform then runs with the chart's ServiceAccounts (a token from the TokenRequest API for
each component, authorized by the real RBAC authorizer) and the controller with the environment the chart
gives it, Eventing included, and serves the hello-world Service and an event through a Broker; `helm upgrade`
keeps the generated secrets; `helm uninstall` removes the release.

The chart's own pods are kept off the test node (a nodeSelector no node matches): the node agent runs
commands, not images, and a pod here has no in-cluster API address to talk to. What the pods would do, the
same `serving` processes do on the host with the pods' identities; the eventing component, which uses no
API, runs there with the token from the chart's Secret. The test control plane runs no StatefulSet
controller, so the eventing StatefulSet makes neither its pod nor its claim.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client

from serving.kube.api import (
    BROKERS,
    CORE_SERVICES,
    DEPLOYMENTS,
    PODS,
    REVISIONS,
    SECRETS,
    SERVICES,
    STATEFUL_SETS,
    TRIGGERS,
    ApiError,
    Kube,
    Resource,
)
from tests.kube.platform import (
    CRD,
    DOMAIN,
    ROOT,
    Platform,
    answer,
    eventually,
    hello_service,
    ready,
    service_ready,
)
from tests.records import json_lines

pytestmark = pytest.mark.kube

CHART = ROOT / "charts/serving"
RELEASE = "serving"
RELEASE_NS = "serving-system"
APP_NS = "helm-apps"
COMPONENTS = ("controller", "autoscaler", "activator", "router")
"""The components that talk to the API, each with a token of its ServiceAccount; all run as Deployments."""
EVENTING = "eventing"
"""The eventing component: a StatefulSet whose ServiceAccount mounts no token and is bound to nothing."""
NOWHERE = "serving.test/nowhere"
"""A node label no node has: the chart's pods stay Pending."""
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount", True)
CLUSTER_ROLES = Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False)
RECORDER = ROOT / "tests/kube/apps"
BROKER_HOST = f"broker-ingress.{RELEASE_NS}.svc.cluster.local"
SECRETS_KEPT = {"serving-probe-secret": "secret", "serving-eventing-token": "token"}
"""The chart's generated Secrets and their keys: `helm upgrade` must not change them."""


def helm(kube_cluster: Any, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(kube_cluster.plane.bin_dir / "helm"), *args, "--kubeconfig", str(kube_cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def release(kube_cluster: Any) -> Iterator[str]:
    # Helm's --set splits keys at dots: the label's dot is escaped.
    key = NOWHERE.replace(".", "\\.")
    pinned = [
        arg for c in (*COMPONENTS, EVENTING) for arg in ("--set-string", f"{c}.nodeSelector.{key}=true")
    ]
    done = helm(
        kube_cluster,
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        RELEASE_NS,
        "--create-namespace",
        "--set",
        f"domain={DOMAIN}",
        *pinned,
    )
    assert done.returncode == 0, f"helm install failed:\n{done.stdout}\n{done.stderr}"
    try:
        yield done.stdout
    finally:
        helm(kube_cluster, "uninstall", RELEASE, "--namespace", RELEASE_NS)


def test_helm_install_creates_the_release(kube_cluster: Any, release: str) -> None:
    status = helm(kube_cluster, "status", RELEASE, "--namespace", RELEASE_NS, "--output", "json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["info"]["status"] == "deployed"
    listed = helm(kube_cluster, "get", "manifest", RELEASE, "--namespace", RELEASE_NS)
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in yaml.safe_load_all(listed.stdout) if doc}
    for component in COMPONENTS:
        assert ("Deployment", component) in kinds
        assert ("ServiceAccount", component) in kinds
    assert {
        ("StatefulSet", EVENTING),
        ("ServiceAccount", EVENTING),
        ("Service", "broker-ingress"),
        ("Service", "controller"),
        ("Secret", "serving-eventing-token"),
    } <= kinds
    assert {kind for kind, _ in kinds} >= {
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "Role",
        "RoleBinding",
    }


async def test_the_eventing_statefulset_is_admitted_with_its_claim(kube: Kube, release: str) -> None:
    stateful = await kube.get(STATEFUL_SETS, RELEASE_NS, EVENTING)
    assert stateful["spec"]["replicas"] == 1
    (claim,) = stateful["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    mounts = stateful["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "data", "mountPath": "/var/lib/serving/eventing"} in mounts
    account = await kube.get(SERVICE_ACCOUNTS, RELEASE_NS, EVENTING)
    assert account["automountServiceAccountToken"] is False


@pytest.fixture(scope="module")
def kubeconfigs(kube_cluster: Any, release: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """For each component, a kubeconfig that authenticates as the chart's ServiceAccount for it (the eventing
    component's too, which is bound to nothing)."""
    folder = tmp_path_factory.mktemp("serviceaccounts")
    admin = yaml.safe_load(Path(kube_cluster.kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    tokens = asyncio.run(_tokens(kube_cluster))
    paths: dict[str, Path] = {}
    for component, token in tokens.items():
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": cluster}],
            "users": [{"name": component, "user": {"token": token}}],
            "contexts": [{"name": component, "context": {"cluster": "test", "user": component}}],
            "current-context": component,
        }
        paths[component] = folder / f"{component}.kubeconfig"
        paths[component].write_text(yaml.safe_dump(config))
    return paths


async def _tokens(kube_cluster: Any) -> dict[str, str]:
    async with kube_cluster.api_client() as api:
        core = client.CoreV1Api(api)
        tokens: dict[str, str] = {}
        for component in (*COMPONENTS, EVENTING):
            request = client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
            )
            issued = await core.create_namespaced_service_account_token(component, RELEASE_NS, request)
            tokens[component] = issued.status.token
        return tokens


async def _chart_env(kube: Kube, component: str) -> dict[str, str]:
    """The plain `value` environment the chart gives `component`'s container."""
    deployment = await kube.get(DEPLOYMENTS, RELEASE_NS, component)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


async def _chart_secrets(kube: Kube) -> dict[str, str]:
    """The values of the chart's generated Secrets, by Secret name."""
    found: dict[str, str] = {}
    for name, key in SECRETS_KEPT.items():
        secret = await kube.get(SECRETS, RELEASE_NS, name)
        found[name] = base64.b64decode(secret["data"][key]).decode()
    return found


@pytest.fixture(scope="module")
def platform(
    kube_cluster: Any, kubeconfigs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    async def chart() -> tuple[dict[str, str], dict[str, str]]:
        kube = await Kube.connect(str(kube_cluster.kubeconfig))
        try:
            return await _chart_env(kube, "controller"), await _chart_secrets(kube)
        finally:
            await kube.close()

    env, secrets = asyncio.run(chart())
    assert env["EVENTING"] == "true"
    # The controller's feed and the eventing component listen on free host ports (the platform's); the token
    # is the chart's.
    running = Platform(
        kubeconfig=Path(kube_cluster.kubeconfig),
        kubeconfigs=kubeconfigs,
        log_dir=tmp_path_factory.mktemp("helm-platform"),
        system_namespace=RELEASE_NS,
        controller_env={**env, "POD_NAME": "controller-helm-test"},
        eventing=True,
        eventing_token=secrets["serving-eventing-token"],
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


async def test_the_chart_pods_are_held_and_their_identities_are_real(kube: Kube, platform: Platform) -> None:
    for component in COMPONENTS:
        account = await kube.get(SERVICE_ACCOUNTS, RELEASE_NS, component)
        assert account["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE

    workloads = {*COMPONENTS, EVENTING}  # the Deployments' pods and the eventing StatefulSet's

    async def one_pod_each() -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = (await kube.list(PODS, RELEASE_NS)).get("items", [])
        return found if {p["spec"]["serviceAccountName"] for p in found} == workloads else None

    pods = await eventually(
        one_pod_each, 60, "a pod of each of the chart's Deployments and StatefulSet", platform
    )
    assert all(not p["spec"].get("nodeName") for p in pods), (
        "a chart pod was scheduled despite its nodeSelector"
    )
    assert {p["spec"]["serviceAccountName"] for p in pods} == workloads
    # The activator's identity reads revisions but may not write Deployments: a token that is not admin.
    activator = await Kube.connect(str(platform.kubeconfigs["activator"]))
    try:
        assert (await activator.list(REVISIONS, APP_NS)).get("items") == []
        with pytest.raises(ApiError) as denied:
            await activator.create(
                DEPLOYMENTS,
                APP_NS,
                {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}},
            )
        assert denied.value.status == 403
    finally:
        await activator.close()
    # The eventing component's identity is bound to nothing: not even the Eventing objects or Secrets.
    eventing = await Kube.connect(str(platform.kubeconfigs[EVENTING]))
    try:
        for resource in (BROKERS, SECRETS):
            with pytest.raises(ApiError) as denied:
                await eventing.list(resource, APP_NS)
            assert denied.value.status == 403, resource.plural
    finally:
        await eventing.close()


async def _app_namespace(kube: Kube) -> None:
    try:
        await kube.create(NAMESPACES, None, {"metadata": {"name": APP_NS}})
    except ApiError as exc:
        if not exc.conflict:
            raise


async def test_the_platform_serves_with_the_charts_service_accounts(kube: Kube, platform: Platform) -> None:
    await _app_namespace(kube)
    hello = hello_service()
    hello["metadata"]["namespace"] = APP_NS
    await kube.create(SERVICES, APP_NS, hello)
    svc = await eventually(
        lambda: service_ready(kube, "hello", namespace=APP_NS), 120, "Service hello Ready", platform
    )
    assert svc["status"]["url"] == f"http://hello.{APP_NS}.{DOMAIN}"
    async with aiohttp.ClientSession() as session:
        reply = await eventually(
            lambda: answer(session, platform, f"hello.{APP_NS}.{DOMAIN}"),
            60,
            "an answer through the router",
            platform,
        )
    assert reply[1].strip() == "Hello Python Sample v1!"

    # Scale-to-zero needs the autoscaler's write on deployments/scale: with its ServiceAccount, it happens.
    async def at_zero() -> bool:
        deployment = await kube.get(DEPLOYMENTS, APP_NS, "hello-00001-deployment")
        return bool(deployment["spec"].get("replicas") == 0)

    await eventually(at_zero, 90, "hello-00001 scaled to zero by the autoscaler's identity", platform)
    await kube.delete(SERVICES, APP_NS, "hello")

    async def gone() -> bool:
        try:
            await kube.get(CORE_SERVICES, APP_NS, "hello-00001-private")
        except ApiError as exc:
            return exc.status == 404
        return False

    await eventually(gone, 60, "Service hello's objects deleted", platform)


def recorder_service(record: Path) -> dict[str, Any]:
    """A Service whose app appends every event it receives to `record` (tests/kube/apps/recorder.py)."""
    container = {
        "image": "docker.io/example/recorder",
        "command": [sys.executable, "recorder.py"],
        "workingDir": str(RECORDER),
        "env": [{"name": "RECORD_FILE", "value": str(record)}],
    }
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "recorder", "namespace": APP_NS},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }


async def test_eventing_runs_with_the_charts_identity_and_token(
    kube: Kube, platform: Platform, tmp_path: Path
) -> None:
    """As the chart's ServiceAccount, the controller reads a Broker and a Trigger and writes their status
    (the Broker's address is the chart's `broker-ingress` Service); behind the token of the chart's Secret it
    serves them to the eventing component, which takes an event and delivers it to the Trigger's Service."""
    await _app_namespace(kube)
    record = tmp_path / "events.jsonl"
    await kube.create(SERVICES, APP_NS, recorder_service(record))
    broker = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "metadata": {"name": "default"}}
    await kube.create(BROKERS, APP_NS, broker)
    subscriber = {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "recorder"}}
    trigger = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "to-recorder"},
        "spec": {"broker": "default", "subscriber": subscriber},
    }
    await kube.create(TRIGGERS, APP_NS, trigger)
    await eventually(
        lambda: service_ready(kube, "recorder", namespace=APP_NS), 120, "Service recorder Ready", platform
    )

    def ready_one(resource: Resource, name: str) -> Any:
        async def check() -> dict[str, Any] | None:
            obj = await kube.get(resource, APP_NS, name)
            return obj if ready(obj) else None

        return check

    found = await eventually(ready_one(BROKERS, "default"), 60, "the Broker Ready", platform)
    assert found["status"]["address"]["url"] == f"http://{BROKER_HOST}/{APP_NS}/default"
    found = await eventually(ready_one(TRIGGERS, "to-recorder"), 60, "the Trigger Ready", platform)
    assert found["status"]["subscriberUri"] == f"http://recorder.{APP_NS}.svc.cluster.local"

    event_id = str(uuid.uuid4())
    async with aiohttp.ClientSession() as session:

        async def accepted() -> bool:
            async with session.post(
                f"http://127.0.0.1:{platform.eventing_port}/{APP_NS}/default",
                data=b"from the chart",
                headers={
                    "Host": BROKER_HOST,
                    "Content-Type": "text/plain",
                    "ce-specversion": "1.0",
                    "ce-id": event_id,
                    "ce-source": "tests/kube/test_helm_install",
                    "ce-type": "dev.example.chart",
                },
                timeout=aiohttp.ClientTimeout(total=30),
            ) as response:
                return response.status == 202

        # Until the component has read the Broker from the feed it answers 404: retried.
        await eventually(accepted, 30, "the Broker ingress accepting the event", platform)

    async def delivered() -> list[dict[str, Any]]:
        return [e for e in json_lines(record) if e["attributes"].get("id") == event_id]

    events = await eventually(delivered, 60, "the event delivered to Service recorder", platform)
    assert events[0]["data"] == "from the chart"
    assert events[0]["host"] == f"recorder.{APP_NS}.svc.cluster.local"

    await kube.delete(TRIGGERS, APP_NS, "to-recorder")
    await kube.delete(BROKERS, APP_NS, "default")
    await kube.delete(SERVICES, APP_NS, "recorder")


async def test_helm_upgrade_keeps_the_generated_secrets(kube_cluster: Any, kube: Kube, release: str) -> None:
    """An upgrade re-renders the Secrets from the cluster's (Helm's `lookup`), and updates the eventing
    StatefulSet in place (its claim template unchanged)."""
    before = await _chart_secrets(kube)
    done = await asyncio.to_thread(
        helm,
        kube_cluster,
        "upgrade",
        RELEASE,
        str(CHART),
        "--namespace",
        RELEASE_NS,
        "--reuse-values",
        "--set",
        "eventing.logLevel=debug",
    )
    assert done.returncode == 0, f"helm upgrade failed:\n{done.stdout}\n{done.stderr}"
    assert await _chart_secrets(kube) == before
    stateful = await kube.get(STATEFUL_SETS, RELEASE_NS, EVENTING)
    env = {e["name"]: e.get("value") for e in stateful["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LOG_LEVEL"] == "debug"


def test_helm_uninstall_removes_the_release(kube_cluster: Any, release: str, platform: Platform) -> None:
    platform.stop()
    done = helm(kube_cluster, "uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait", "--timeout", "60s")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"

    async def leftovers() -> list[str]:
        kube = await Kube.connect(str(kube_cluster.kubeconfig))
        try:
            found = [
                f"{resource.kind} {d['metadata']['name']}"
                for resource in (DEPLOYMENTS, STATEFUL_SETS)
                for d in (await kube.list(resource, RELEASE_NS)).get("items", [])
            ]
            # The eventing token goes with the release; the probe secret is kept for the next install.
            secrets = {s["metadata"]["name"] for s in (await kube.list(SECRETS, RELEASE_NS)).get("items", [])}
            found += [f"Secret {name}" for name in secrets if name == "serving-eventing-token"]
            assert "serving-probe-secret" in secrets
            roles = (
                await kube.list(CLUSTER_ROLES, None, label_selector=f"app.kubernetes.io/instance={RELEASE}")
            ).get("items", [])
            found += [f"ClusterRole {r['metadata']['name']}" for r in roles]
            # The CRDs stay (Helm never deletes what crds/ installed): Services in every namespace survive.
            await kube.get(CRD, None, "services.serving.knative.dev")
            return found
        finally:
            await kube.close()

    assert asyncio.run(leftovers()) == []
