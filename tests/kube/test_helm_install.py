"""The Helm chart installed on a real control plane: `helm install` creates every object (the apiserver admits
the CRDs, the RBAC, the Deployments, PodDisruptionBudgets and the rest); the platform then runs with the
chart's ServiceAccounts (a token from the TokenRequest API for each component, authorized by the real RBAC
authorizer) and the controller with the environment the chart gives it, and serves the hello-world Service;
`helm uninstall` removes the release.

The chart's own pods are kept off the test node (a nodeSelector no node matches): the node agent runs
commands, not images, and a pod here has no in-cluster API address to talk to. What the pods would do, the
same `serving` processes do on the host with the pods' identities.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client

from serving.kube.api import CORE_SERVICES, DEPLOYMENTS, PODS, REVISIONS, SERVICES, ApiError, Kube, Resource
from tests.kube.platform import (
    CRD,
    DOMAIN,
    ROOT,
    Platform,
    answer,
    eventually,
    hello_service,
    service_ready,
)

pytestmark = pytest.mark.kube

CHART = ROOT / "charts/serving"
RELEASE = "serving"
RELEASE_NS = "serving-system"
APP_NS = "helm-apps"
COMPONENTS = ("controller", "autoscaler", "activator", "router")
NOWHERE = "serving.test/nowhere"
"""A node label no node has: the chart's pods stay Pending."""
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount", True)
CLUSTER_ROLES = Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False)


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
    pinned = [arg for c in COMPONENTS for arg in ("--set-string", f"{c}.nodeSelector.{key}=true")]
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
    assert {kind for kind, _ in kinds} >= {
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "Role",
        "RoleBinding",
    }


@pytest.fixture(scope="module")
def kubeconfigs(kube_cluster: Any, release: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """For each component, a kubeconfig that authenticates as the chart's ServiceAccount for it."""
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
        for component in COMPONENTS:
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


@pytest.fixture(scope="module")
def platform(
    kube_cluster: Any, kubeconfigs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    async def controller_env() -> dict[str, str]:
        kube = await Kube.connect(str(kube_cluster.kubeconfig))
        try:
            return await _chart_env(kube, "controller")
        finally:
            await kube.close()

    env = asyncio.run(controller_env())
    running = Platform(
        kubeconfig=Path(kube_cluster.kubeconfig),
        kubeconfigs=kubeconfigs,
        log_dir=tmp_path_factory.mktemp("helm-platform"),
        system_namespace=RELEASE_NS,
        controller_env={**env, "POD_NAME": "controller-helm-test"},
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

    async def one_pod_each() -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = (await kube.list(PODS, RELEASE_NS)).get("items", [])
        return found if {p["spec"]["serviceAccountName"] for p in found} == set(COMPONENTS) else None

    pods = await eventually(one_pod_each, 60, "a pod of each of the chart's Deployments", platform)
    assert all(not p["spec"].get("nodeName") for p in pods), (
        "a chart pod was scheduled despite its nodeSelector"
    )
    assert {p["spec"]["serviceAccountName"] for p in pods} == set(COMPONENTS)
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


async def test_the_platform_serves_with_the_charts_service_accounts(kube: Kube, platform: Platform) -> None:
    try:
        await kube.create(
            Resource("", "v1", "namespaces", "Namespace", False), None, {"metadata": {"name": APP_NS}}
        )
    except ApiError as exc:
        if not exc.conflict:
            raise
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


def test_helm_uninstall_removes_the_release(kube_cluster: Any, release: str, platform: Platform) -> None:
    platform.stop()
    done = helm(kube_cluster, "uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait", "--timeout", "60s")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"

    async def leftovers() -> list[str]:
        kube = await Kube.connect(str(kube_cluster.kubeconfig))
        try:
            found = [
                f"Deployment {d['metadata']['name']}"
                for d in (await kube.list(DEPLOYMENTS, RELEASE_NS)).get("items", [])
            ]
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
