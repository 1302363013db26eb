"""The test cluster itself works: the apiserver stores objects, the controller-manager turns a Deployment into
ready pods behind a Service's EndpointSlice, the node agent runs, probes, restarts and stops them as processes
in their own network namespaces, and keeps doing so across an apiserver restart."""

from __future__ import annotations

import asyncio
import ipaddress
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from kubernetes_asyncio import client

from tests.kube.conftest import KubeCluster

pytestmark = pytest.mark.kube

T = TypeVar("T")

SERVER = """
import http.server, os, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/prestop":
            print("preStop received", flush=True)
        body = f"{os.environ['POD_NAME']} {os.environ['POD_IP']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
print("serving on", sys.argv[1], flush=True)
http.server.HTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
"""
"""A tiny HTTP server answering with the pod's name and IP (both from the downward API)."""
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
time.sleep(600)
"""

STOPWATCH = """
import signal, sys, time
def stop(*_):
    print("SIGTERM at", time.time(), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("started", flush=True)
while True:
    time.sleep(1)
"""
"""Prints when it gets SIGTERM (wall-clock seconds), then exits."""


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """Poll `check` until it returns something true, and return that; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.2)


def server_container(port: int = 8080, **extra: Any) -> dict[str, Any]:
    """A container running SERVER, port given through `$(PORT)` expansion, ready when it answers."""
    return {
        "name": "web",
        "image": "unused.example/web",
        "command": ["python3", "-c", SERVER],
        "args": ["$(PORT)"],
        "env": [
            {"name": "PORT", "value": str(port)},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        ],
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        **extra,
    }


def deployment(name: str, replicas: int, **pod_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [server_container()], **pod_spec},
            },
        },
    }


def bare_pod(name: str, container: dict[str, Any], restart_policy: str = "Always") -> dict[str, Any]:
    container = {"image": "unused.example/app", **container}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [container],
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 2,
        },
    }


def core(api: Any) -> Any:
    """CoreV1Api, loosely typed: the tests pass plain dicts where its stubs name model classes."""
    return client.CoreV1Api(api)


def client_apps(api: Any) -> Any:
    return client.AppsV1Api(api)


def is_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def processes_with(variable: str) -> list[int]:
    """Live processes whose environment holds `variable` (e.g. POD_UID=<uid>)."""
    needle = variable.encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (
                needle in (entry / "environ").read_bytes().split(b"\0")
                and "\nState:\tZ" not in (entry / "status").read_text()
            ):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


async def http_get(url: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp,
    ):
        assert resp.status == 200, f"GET {url}: {resp.status}"
        return await resp.text()


@pytest.fixture
async def api(kube_cluster: KubeCluster) -> AsyncIterator[Any]:
    async with kube_cluster.api_client() as api_client:
        yield api_client


@pytest.fixture
async def namespace(api: Any) -> AsyncIterator[str]:
    """A fresh namespace whose `default` ServiceAccount exists (pods are admitted only then)."""
    v1 = core(api)
    name = f"t-{uuid.uuid4().hex[:8]}"
    await v1.create_namespace({"metadata": {"name": name}})

    async def has_service_account() -> bool:
        accounts = await v1.list_namespaced_service_account(name)
        return any(sa.metadata.name == "default" for sa in accounts.items)

    await eventually(has_service_account, 20, f"the default ServiceAccount in {name}")
    yield name
    await v1.delete_namespace(name)


async def test_apiserver_stores_objects_and_the_node_is_ready(
    kube_cluster: KubeCluster, api: Any, namespace: str
) -> None:
    version = await client.VersionApi(api).get_code()
    assert version.major == "1"
    v1 = core(api)
    assert (await v1.read_namespace(namespace)).status.phase == "Active"
    await v1.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"greeting": "hi"}}
    )
    assert (await v1.read_namespaced_config_map("settings", namespace)).data == {"greeting": "hi"}

    node = await v1.read_node(kube_cluster.node.node_name)
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    assert not [t for t in node.spec.taints or [] if t.key == "node.kubernetes.io/not-ready"]
    lease = await client.CoordinationV1Api(api).read_namespaced_lease(
        kube_cluster.node.node_name, "kube-node-lease"
    )
    assert lease.spec.holder_identity == kube_cluster.node.node_name


async def test_deployment_pods_become_ready_serve_and_back_a_service(
    kube_cluster: KubeCluster, api: Any, namespace: str
) -> None:
    v1, apps = core(api), client_apps(api)
    service = {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    await v1.create_namespaced_service(namespace, service)
    await apps.create_namespaced_deployment(namespace, deployment("web", 2))

    async def ready_pods() -> list[Any] | None:
        pods = (await v1.list_namespaced_pod(namespace, label_selector="app=web")).items
        return pods if len(pods) == 2 and all(is_ready(p) for p in pods) else None

    pods = await eventually(ready_pods, 30, "two ready pods")
    ips = [p.status.pod_ip for p in pods]
    assert len(set(ips)) == 2, ips
    assert all(ipaddress.ip_address(ip) in kube_cluster.node.network for ip in ips), ips
    for pod in pods:
        assert pod.spec.node_name == kube_cluster.node.node_name
        assert pod.status.phase == "Running"
        assert pod.status.host_ip == kube_cluster.node.gateway
        assert pod.metadata.owner_references[0].kind == "ReplicaSet"
        (status,) = pod.status.container_statuses
        assert status.ready
        assert status.started
        assert status.state.running is not None
        # The test process reaches the pod's own address, across the bridge into its namespace.
        assert (
            await http_get(f"http://{pod.status.pod_ip}:8080/") == f"{pod.metadata.name} {pod.status.pod_ip}"
        )

    async def ready_endpoints() -> set[str] | None:
        slices = await client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=web"
        )
        ready = {
            address
            for piece in slices.items
            for endpoint in piece.endpoints or []
            if endpoint.conditions.ready
            for address in endpoint.addresses
        }
        return ready if ready == set(ips) else None

    await eventually(ready_endpoints, 20, f"an EndpointSlice listing {ips} ready")
    status = (await apps.read_namespaced_deployment("web", namespace)).status
    assert status.ready_replicas == 2


async def test_deleting_a_deployment_stops_its_pods(
    kube_cluster: KubeCluster, api: Any, namespace: str
) -> None:
    v1, apps = core(api), client_apps(api)
    hook = {"preStop": {"httpGet": {"path": "/prestop", "port": "http"}}}
    spec = deployment("gone", 1, terminationGracePeriodSeconds=30)
    spec["spec"]["template"]["spec"]["containers"] = [server_container(lifecycle=hook)]
    await apps.create_namespaced_deployment(namespace, spec)

    async def ready_pod() -> Any:
        pods = (await v1.list_namespaced_pod(namespace, label_selector="app=gone")).items
        return pods[0] if len(pods) == 1 and is_ready(pods[0]) else None

    pod = await eventually(ready_pod, 30, "a ready pod")
    uid, ip = pod.metadata.uid, pod.status.pod_ip
    assert processes_with(f"POD_UID={uid}"), "the pod's process is not running"

    started = time.monotonic()
    await apps.delete_namespaced_deployment("gone", namespace, propagation_policy="Background")

    async def all_gone() -> bool:
        pods = (await v1.list_namespaced_pod(namespace, label_selector="app=gone")).items
        sets = (await apps.list_namespaced_replica_set(namespace, label_selector="app=gone")).items
        return not pods and not sets

    await eventually(all_gone, 20, "the ReplicaSet and pod to be garbage-collected")
    # The server exits on SIGTERM: the pod is gone long before its 30 s grace period would end.
    assert time.monotonic() - started < 10, "the pod was not stopped with SIGTERM"
    assert not processes_with(f"POD_UID={uid}"), "the pod's process outlived the pod"
    assert (
        "preStop received"
        in kube_cluster.container_log(namespace, pod.metadata.name, "web", uid).splitlines()
    )
    with pytest.raises((aiohttp.ClientError, OSError, TimeoutError)):
        await http_get(f"http://{ip}:8080/")


async def test_each_container_gets_sigterm_after_its_own_pre_stop_hook_only(
    kube_cluster: KubeCluster, api: Any, namespace: str
) -> None:
    """The kubelet stops a pod's containers side by side, each after its own preStop hook: a container
    without a hook gets SIGTERM at once, while its neighbour's hook still runs (Knative's drain relies on
    this: the queue-proxy drains on SIGTERM while the app's preStop hook waits for that drain to end)."""
    v1 = core(api)
    name = f"pair-{uuid.uuid4().hex[:6]}"
    containers: list[dict[str, Any]] = [
        {"name": "plain", "command": ["python3", "-c", STOPWATCH]},
        {
            "name": "hooked",
            "command": ["python3", "-c", STOPWATCH],
            "lifecycle": {"preStop": {"sleep": {"seconds": 3}}},
        },
    ]
    pod = bare_pod(name, containers[0])
    pod["spec"]["containers"] = [{"image": "unused.example/app", **c} for c in containers]
    pod["spec"]["terminationGracePeriodSeconds"] = 20
    await v1.create_namespaced_pod(namespace, pod)

    async def running() -> Any:
        found = await v1.read_namespaced_pod(name, namespace)
        statuses = found.status.container_statuses or []
        up = len(statuses) == 2 and all(s.state.running for s in statuses)
        logs = [
            kube_cluster.container_log(namespace, name, c, found.metadata.uid) for c in ("plain", "hooked")
        ]
        return found if up and all("started" in log for log in logs) else None

    uid = (await eventually(running, 30, "both containers running")).metadata.uid
    await v1.delete_namespaced_pod(name, namespace)

    def stopped_at(container: str) -> float | None:
        for line in kube_cluster.container_log(namespace, name, container, uid).splitlines():
            if line.startswith("SIGTERM at "):
                return float(line.split()[-1])
        return None

    async def both_stopped() -> tuple[float, float] | None:
        plain, hooked = stopped_at("plain"), stopped_at("hooked")
        return None if plain is None or hooked is None else (plain, hooked)

    plain, hooked = await eventually(both_stopped, 30, "both containers to get SIGTERM")
    assert hooked - plain >= 2.5, f"SIGTERM: plain at {plain}, hooked at {hooked} (its hook sleeps 3 s)"


async def test_container_ignoring_sigterm_is_killed_after_the_grace_period(
    kube_cluster: KubeCluster, api: Any, namespace: str
) -> None:
    v1 = core(api)
    stubborn = {
        "name": "stubborn",
        "command": ["python3", "-c", STUBBORN],
        "env": [{"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}],
    }
    pod = await v1.create_namespaced_pod(namespace, bare_pod("stubborn", stubborn))

    async def started() -> bool:
        log = kube_cluster.container_log(namespace, "stubborn", "stubborn", pod.metadata.uid)
        return "ignoring SIGTERM" in log.splitlines()

    await eventually(started, 20, "the container to start")
    began = time.monotonic()
    await v1.delete_namespaced_pod("stubborn", namespace)

    async def gone() -> bool:
        return not (await v1.list_namespaced_pod(namespace, field_selector="metadata.name=stubborn")).items

    await eventually(gone, 15, "the pod's deletion")
    took = time.monotonic() - began
    assert 2 <= took < 8, f"deleted after {took:.1f}s; its grace period is 2s"
    assert not processes_with(f"POD_UID={pod.metadata.uid}"), "SIGKILL did not end the container"


async def test_force_deleted_pod_has_its_processes_killed(api: Any, namespace: str) -> None:
    v1 = core(api)
    await v1.create_namespaced_pod(namespace, bare_pod("vanish", server_container()))

    async def ready() -> Any:
        pod = await v1.read_namespaced_pod("vanish", namespace)
        return pod if is_ready(pod) else None

    pod = await eventually(ready, 30, "the pod ready")
    variable = f"POD_UID={pod.metadata.uid}"
    assert processes_with(variable)
    # Gone from the API at once: the agent learns it from the watch's DELETED event only.
    await v1.delete_namespaced_pod("vanish", namespace, grace_period_seconds=0)

    async def killed() -> bool:
        return not processes_with(variable)

    await eventually(killed, 10, "the vanished pod's process to be killed")


async def test_init_container_env_sources_probes_and_readiness_gate(
    kube_cluster: KubeCluster, api: Any, namespace: str
) -> None:
    v1 = core(api)
    await v1.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"mode": "fast"}})
    await v1.create_namespaced_secret(
        namespace, {"metadata": {"name": "sec"}, "stringData": {"token": "s3cret"}}
    )
    show = (
        "import os, time; print(*map(os.environ.get, 'A B CFG_mode C'.split()), flush=True); time.sleep(99)"
    )
    main = {
        "name": "main",
        "command": ["python3", "-c", show],
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
            {"name": "C", "value": "$(A)-$$(A)-$(UNDEFINED)"},
        ],
        "startupProbe": {"exec": {"command": ["python3", "-c", "pass"]}, "periodSeconds": 1},
        "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
    }
    pod = bare_pod("featured", main)
    pod["spec"]["initContainers"] = [
        {"name": "init", "image": "x", "command": ["python3", "-c", "print('init')"]}
    ]
    pod["spec"]["readinessGates"] = [{"conditionType": "example.com/gate"}]
    await v1.create_namespaced_pod(namespace, pod)

    async def containers_ready() -> Any:
        found = await v1.read_namespaced_pod("featured", namespace)
        conditions = {c.type: c.status for c in found.status.conditions or []}
        return found if conditions.get("ContainersReady") == "True" else None

    found = await eventually(containers_ready, 20, "the main container to be ready")
    (init,) = found.status.init_container_statuses
    assert init.state.terminated.exit_code == 0
    assert {c.type: c.status for c in found.status.conditions}["Ready"] == "False", "the gate is closed"
    assert (
        kube_cluster.container_log(namespace, "featured", "main").splitlines()[-1]
        == "fast s3cret fast fast-$(A)-$(UNDEFINED)"
    )

    gate = {"status": {"conditions": [{"type": "example.com/gate", "status": "True"}]}}
    await v1.patch_namespaced_pod_status("featured", namespace, gate)

    async def ready() -> bool:
        return is_ready(await v1.read_namespaced_pod("featured", namespace))

    await eventually(ready, 10, "Ready once the readiness gate opened")


async def test_exited_container_is_restarted_with_back_off(
    kube_cluster: KubeCluster, api: Any, namespace: str
) -> None:
    v1 = core(api)
    crasher = {"name": "crash", "command": ["python3", "-c", "print('ran', flush=True); raise SystemExit(3)"]}
    await v1.create_namespaced_pod(namespace, bare_pod("crasher", crasher))

    async def restarted_twice() -> Any:
        pod = await v1.read_namespaced_pod("crasher", namespace)
        statuses = pod.status.container_statuses or []
        return statuses[0] if statuses and statuses[0].restart_count >= 2 else None

    status = await eventually(restarted_twice, 20, "two restarts")
    assert status.last_state.terminated.exit_code == 3
    # Without a readiness probe a container is ready exactly while it runs (as the kubelet has it): between
    # crashes (back-off) it is not.
    assert status.ready == (status.state.running is not None)
    assert kube_cluster.container_log(namespace, "crasher", "crash").splitlines().count("ran") >= 2


async def test_liveness_failure_restarts_the_container(api: Any, namespace: str) -> None:
    v1 = core(api)
    probe = {"tcpSocket": {"port": 9999}, "periodSeconds": 1, "failureThreshold": 2}
    await v1.create_namespaced_pod(namespace, bare_pod("unwell", server_container(livenessProbe=probe)))

    async def restarted() -> bool:
        statuses = (await v1.read_namespaced_pod("unwell", namespace)).status.container_statuses or []
        return bool(statuses) and statuses[0].restart_count >= 1

    await eventually(restarted, 20, "a restart after failed liveness probes")


@pytest.mark.parametrize(
    ("code", "phase"), [pytest.param(0, "Succeeded", id="exit-0"), pytest.param(1, "Failed", id="exit-1")]
)
async def test_pod_that_may_not_restart_ends_in_a_terminal_phase(
    api: Any, namespace: str, code: int, phase: str
) -> None:
    v1 = core(api)
    once = {"name": "once", "command": ["python3", "-c", f"raise SystemExit({code})"]}
    await v1.create_namespaced_pod(namespace, bare_pod("once", once, restart_policy="Never"))

    async def ended() -> Any:
        pod = await v1.read_namespaced_pod("once", namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod = await eventually(ended, 20, "a terminal phase")
    assert pod.status.phase == phase
    (status,) = pod.status.container_statuses
    assert status.state.terminated.exit_code == code
    assert status.restart_count == 0


async def test_container_without_command_is_reported_not_run(api: Any, namespace: str) -> None:
    v1 = core(api)
    await v1.create_namespaced_pod(namespace, bare_pod("imageonly", {"name": "app"}))

    async def waiting() -> Any:
        statuses = (await v1.read_namespaced_pod("imageonly", namespace)).status.container_statuses or []
        return statuses[0].state.waiting if statuses and statuses[0].state.waiting else None

    waiting_state = await eventually(waiting, 20, "a waiting reason")
    assert waiting_state.reason == "CreateContainerError"
    assert "no command" in waiting_state.message
    assert (await v1.read_namespaced_pod("imageonly", namespace)).status.phase == "Pending"


async def test_node_agent_keeps_working_across_an_apiserver_restart(
    kube_cluster: KubeCluster, api: Any, namespace: str
) -> None:
    v1 = core(api)
    await v1.create_namespaced_pod(namespace, bare_pod("before", server_container()))

    async def ready(name: str) -> Any:
        pod = await v1.read_namespaced_pod(name, namespace)
        return pod if is_ready(pod) else None

    before = await eventually(lambda: ready("before"), 30, "the first pod ready")
    await asyncio.to_thread(kube_cluster.restart_apiserver)

    await v1.create_namespaced_pod(namespace, bare_pod("after", server_container()))
    after = await eventually(lambda: ready("after"), 30, "a pod created after the restart to be ready")
    assert await http_get(f"http://{after.status.pod_ip}:8080/") == f"after {after.status.pod_ip}"

    await v1.delete_namespaced_pod("before", namespace)

    async def before_gone() -> bool:
        pods = (await v1.list_namespaced_pod(namespace, field_selector="metadata.name=before")).items
        return not pods

    await eventually(before_gone, 20, "the first pod's deletion to be finished by the agent")
    assert not processes_with(f"POD_UID={before.metadata.uid}")
