"""Serving on a real control plane: the hello-world Service applied through the API becomes Configuration,
Revision, Deployment, private Service and Route; pods (run by the test node agent) answer through the ingress
router; the Service scales to zero and back under a burst; traffic splits by percent and tag; an edit rolls
out without a failed request; the controller survives being killed and the API server restarting; old
revisions are garbage-collected; deleting the Service removes everything.

The platform's processes run on the host with the cluster's kubeconfig (`tests/kube/platform.py`); each
request goes client -> router -> (activator ->) queue-proxy -> app across real network namespaces.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from serving.kube.api import (
    CONFIGURATIONS,
    CORE_SERVICES,
    DEPLOYMENTS,
    NAMESPACES,
    REVISIONS,
    ROUTES,
    SERVICES,
    ApiError,
    Kube,
    Resource,
)
from tests.kube.platform import CRDS, DOMAIN, ROOT, SYSTEM_NAMESPACE, Platform

pytestmark = pytest.mark.kube

CRD = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False)
HELLO = ROOT / "examples/helloworld-python"
NS = "default"


def hello_service(name: str = "hello", target: str = "Python Sample v1") -> dict[str, Any]:
    """The example's Service, with the app's folder as its working directory (the node agent runs the
    container's command, not its image)."""
    doc: dict[str, Any] = yaml.safe_load((HELLO / "service.yaml").read_text())
    doc["metadata"]["name"] = name
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["workingDir"] = str(HELLO)
    container["env"] = [{"name": "TARGET", "value": target}]
    return doc


@pytest.fixture(scope="module")
def platform(kube_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    log_dir = tmp_path_factory.mktemp("platform")
    asyncio.run(_install(Path(kube_cluster.kubeconfig)))
    running = Platform(
        kubeconfig=Path(kube_cluster.kubeconfig),
        log_dir=log_dir,
        controller_env={
            "GC_RETAIN_SINCE_CREATE_TIME": "0s",
            "GC_RETAIN_SINCE_LAST_ACTIVE_TIME": "0s",
            "GC_MIN_NON_ACTIVE_REVISIONS": "1",
        },
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()
        print(running.logs())


async def _install(kubeconfig: Path) -> None:
    kube = await Kube.connect(str(kubeconfig))
    try:
        for doc in yaml.safe_load_all(CRDS.read_text()):
            try:
                await kube.create(CRD, None, doc)
            except ApiError as exc:
                if not exc.conflict:
                    raise
        try:
            await kube.create(
                NAMESPACES,
                None,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}},
            )
        except ApiError as exc:
            if not exc.conflict:
                raise
        deadline = time.monotonic() + 30
        for doc in yaml.safe_load_all(CRDS.read_text()):
            while True:
                crd = await kube.get(CRD, None, doc["metadata"]["name"])
                conditions = (crd.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    break
                assert time.monotonic() < deadline, f"CRD {doc['metadata']['name']} not established"
                await asyncio.sleep(0.2)
    finally:
        await kube.close()


@pytest.fixture
async def kube(platform: Platform) -> AsyncIterator[Kube]:
    client = await Kube.connect(str(platform.kubeconfig))
    try:
        yield client
    finally:
        await client.close()


async def eventually(check: Any, timeout: float, what: str, platform: Platform | None = None) -> Any:
    """Await `check()` until it returns something true; fail naming `what` (with the platform's logs)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except ApiError as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        await asyncio.sleep(0.25)
    logs = platform.logs() if platform is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})\n{logs}")


def ready(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def get_text(session: aiohttp.ClientSession, platform: Platform, host: str) -> tuple[int, str]:
    async with session.get(
        f"http://127.0.0.1:{platform.router_port}/",
        headers={"Host": host},
        timeout=aiohttp.ClientTimeout(total=60),
    ) as response:
        return response.status, await response.text()


async def service_ready(kube: Kube, name: str, generation: int | None = None) -> dict[str, Any] | None:
    obj = await kube.get(SERVICES, NS, name)
    status = obj.get("status") or {}
    if not ready(obj):
        return None
    if generation is not None and status.get("observedGeneration") != generation:
        return None
    return obj


async def test_hello_world_becomes_a_ready_service_that_answers(kube: Kube, platform: Platform) -> None:
    created = await kube.create(SERVICES, NS, hello_service())
    svc = await eventually(lambda: service_ready(kube, "hello"), 120, "Service hello Ready", platform)
    status = svc["status"]
    assert status["url"] == f"http://hello.{NS}.{DOMAIN}"
    assert status["latestCreatedRevisionName"] == "hello-00001"
    assert status["latestReadyRevisionName"] == "hello-00001"
    assert status["observedGeneration"] == created["metadata"]["generation"]
    assert status["traffic"] == [{"revisionName": "hello-00001", "percent": 100, "latestRevision": True}]
    assert {c["type"] for c in status["conditions"]} == {"ConfigurationsReady", "RoutesReady", "Ready"}

    configuration = await kube.get(CONFIGURATIONS, NS, "hello")
    assert configuration["status"]["latestReadyRevisionName"] == "hello-00001"
    assert configuration["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    revision = await kube.get(REVISIONS, NS, "hello-00001")
    assert ready(revision)
    deployment = await kube.get(DEPLOYMENTS, NS, "hello-00001-deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["user-container", "queue-proxy"]
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == revision["metadata"]["uid"]
    private = await kube.get(CORE_SERVICES, NS, "hello-00001-private")
    assert private["spec"]["ports"][0]["targetPort"] == 8012
    route = await kube.get(ROUTES, NS, "hello")
    assert route["status"]["traffic"][0]["revisionName"] == "hello-00001"

    async with aiohttp.ClientSession() as session:
        status_code, body = await eventually(
            lambda: _ok(session, platform, f"hello.{NS}.{DOMAIN}"),
            60,
            "an answer through the router",
            platform,
        )
    assert (status_code, body.strip()) == (200, "Hello Python Sample v1!")


async def _ok(session: aiohttp.ClientSession, platform: Platform, host: str) -> tuple[int, str] | None:
    try:
        status, body = await get_text(session, platform, host)
    except aiohttp.ClientError:
        return None
    return (status, body) if status == 200 else None


async def replicas(kube: Kube, name: str) -> int:
    deployment = await kube.get(DEPLOYMENTS, NS, f"{name}-deployment")
    return int(deployment["spec"].get("replicas") or 0)


async def test_scales_to_zero_and_a_burst_of_100_wakes_it(kube: Kube, platform: Platform) -> None:
    async def at_zero() -> bool:
        return await replicas(kube, "hello-00001") == 0 and not await _pods(kube, "hello-00001")

    await eventually(at_zero, 120, "hello-00001 at zero replicas with no pods", platform)
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(get_text(session, platform, f"hello.{NS}.{DOMAIN}") for _ in range(100)), return_exceptions=True
        )
    statuses = collections.Counter(r[0] if isinstance(r, tuple) else repr(r) for r in results)
    assert statuses == {200: 100}, f"{statuses}\n{platform.logs()}"
    assert await replicas(kube, "hello-00001") >= 1


async def _pods(kube: Kube, revision: str) -> list[dict[str, Any]]:
    from serving.kube.api import PODS

    found = await kube.list(PODS, NS, label_selector=f"serving.knative.dev/revision={revision}")
    items: list[dict[str, Any]] = found.get("items", [])
    return items


async def test_an_edit_rolls_out_with_a_tagged_split_and_no_failed_request(
    kube: Kube, platform: Platform
) -> None:
    current = await kube.get(SERVICES, NS, "hello")
    edited = copy.deepcopy(current)
    edited["spec"] = hello_service(target="Python Sample v2")["spec"]
    edited["spec"]["traffic"] = [
        {"latestRevision": True, "percent": 80},
        {"revisionName": "hello-00001", "percent": 20, "tag": "old"},
    ]
    host = f"hello.{NS}.{DOMAIN}"
    failures: collections.Counter[str] = collections.Counter()
    stop = asyncio.Event()

    async def traffic(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            try:
                status, body = await get_text(session, platform, host)
                if status != 200:
                    failures[f"{status} {body[:80]}"] += 1
            except aiohttp.ClientError as exc:
                failures[repr(exc)] += 1

    async with aiohttp.ClientSession() as session:
        runners = [asyncio.create_task(traffic(session)) for _ in range(4)]
        try:
            updated = await kube.replace(SERVICES, NS, "hello", edited)
            svc = await eventually(
                lambda: service_ready(kube, "hello", updated["metadata"]["generation"]),
                120,
                "hello-00002 ready and routed",
                platform,
            )
        finally:
            stop.set()
            await asyncio.gather(*runners)
        assert failures == collections.Counter(), f"{failures}\n{platform.logs()}"
        assert svc["status"]["latestReadyRevisionName"] == "hello-00002"
        traffic_status = {(t["revisionName"], t["percent"], t.get("tag")) for t in svc["status"]["traffic"]}
        assert traffic_status == {("hello-00002", 80, None), ("hello-00001", 20, "old")}
        bodies: collections.Counter[str] = collections.Counter()
        for _ in range(100):
            status, body = await get_text(session, platform, host)
            assert status == 200
            bodies[body.strip()] += 1
        assert set(bodies) == {"Hello Python Sample v2!", "Hello Python Sample v1!"}
        assert 55 <= bodies["Hello Python Sample v2!"] <= 97, bodies
        for _ in range(5):
            assert await get_text(session, platform, f"old-hello.{NS}.{DOMAIN}") == (
                200,
                "Hello Python Sample v1!\n",
            )
