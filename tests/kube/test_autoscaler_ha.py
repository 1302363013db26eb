"""Two autoscaler replicas on a real control plane: one holds the `serving-autoscaler` Lease, labels its pod
and scales; the other waits warm and refuses stats. Killing the leader hands over within the Lease's
duration; stopping it (SIGTERM) hands over at once; Services scale from zero through whichever leads.

Each replica is a host process standing for a pod: the Pod objects exist in the API (pending: no node
matches their nodeSelector) so that the leader can label its own. The activators reach "the autoscaler
Service" through a forwarder that does what kube-proxy does for a selector Service: each connection goes to
the pod that carries the leader label, and is refused when none does.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from autoscaler.main import LEASE
from serving.kube.api import DEPLOYMENTS, PODS, SERVICES, ApiError, Kube, Resource
from serving.kube.lease import LEADER_LABEL
from tests.kube.platform import (
    DOMAIN,
    SYSTEM_NAMESPACE,
    Component,
    Platform,
    answer,
    eventually,
    free_port,
    hello_service,
    install_crds,
    service_ready,
)

pytestmark = pytest.mark.kube

NS = "autoscaler-ha"
HOST = f"hello.{NS}.{DOMAIN}"
REPLICAS = ("autoscaler-a", "autoscaler-b")
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False)


def _pending_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/component": "autoscaler"}},
        "spec": {
            "nodeSelector": {"serving.test/nowhere": "true"},
            "containers": [{"name": "autoscaler", "image": "serving", "args": ["autoscaler"]}],
        },
    }


class LeaderService:
    """A TCP forwarder on 127.0.0.1 standing for the `autoscaler` Service: it selects the pod labelled
    leader and connects to that replica's port. Runs on its own thread and loop."""

    def __init__(self, kubeconfig: Path, ports: dict[str, int]) -> None:
        self.kubeconfig = kubeconfig
        self.ports = ports
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-service", daemon=True)
        self._stop: asyncio.Event | None = None

    def __enter__(self) -> LeaderService:
        self._thread.start()
        assert self._started.wait(30), "the forwarder did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        kube = await Kube.connect(str(self.kubeconfig))
        tasks: set[asyncio.Task[None]] = set()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await self._forward(kube, reader, writer)
            finally:
                tasks.discard(task)

        server = await asyncio.start_server(accept, "127.0.0.1", self.port)
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await kube.close()

    async def _forward(self, kube: Kube, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            found = await kube.list(PODS, SYSTEM_NAMESPACE, label_selector=f"{LEADER_LABEL}={LEASE}")
            selected = [p["metadata"]["name"] for p in found.get("items", [])]
            ports = [self.ports[name] for name in selected if name in self.ports]
            if not ports:
                raise ConnectionRefusedError("no pod is labelled leader")
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", ports[0])
        except (ApiError, OSError):
            writer.close()
            return

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            with contextlib.suppress(OSError):
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture(scope="module")
def platform(kube_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    kubeconfig = Path(kube_cluster.kubeconfig)

    async def prepare() -> None:
        await install_crds(kubeconfig, SYSTEM_NAMESPACE)
        kube = await Kube.connect(str(kubeconfig))
        try:
            with contextlib.suppress(ApiError):
                await kube.create(NAMESPACES, None, {"metadata": {"name": NS}})
            for name in REPLICAS:
                await kube.create(PODS, SYSTEM_NAMESPACE, _pending_pod(name))
        finally:
            await kube.close()

    asyncio.run(prepare())
    second_port = free_port()
    running = Platform(
        kubeconfig=kubeconfig,
        log_dir=tmp_path_factory.mktemp("autoscaler-ha"),
        autoscaler_env={
            "LEADER_ELECT": "true",
            "SYSTEM_NAMESPACE": SYSTEM_NAMESPACE,
            "POD_NAME": REPLICAS[0],
        },
    )
    running.build()
    first = running.components.pop("autoscaler")
    running.components[REPLICAS[0]] = replace(
        first, name=REPLICAS[0], log_path=first.log_path.with_name("a.log")
    )
    running.components[REPLICAS[1]] = Component(
        REPLICAS[1],
        first.argv,
        {**first.env, "POD_NAME": REPLICAS[1], "AUTOSCALER_PORT": str(second_port)},
        first.log_path.with_name("b.log"),
    )
    ports = {REPLICAS[0]: running.autoscaler_port, REPLICAS[1]: second_port}
    with LeaderService(kubeconfig, ports) as service:
        activator = running.components["activator"]
        activator.env["AUTOSCALER_URL"] = f"ws://127.0.0.1:{service.port}/"
        running.start()
        try:
            yield running
        finally:
            running.stop()

            async def cleanup() -> None:
                kube = await Kube.connect(str(kubeconfig))
                try:
                    with contextlib.suppress(ApiError):
                        await kube.delete(SERVICES, NS, "hello")
                    for name in REPLICAS:
                        with contextlib.suppress(ApiError):
                            await kube.delete(PODS, SYSTEM_NAMESPACE, name, grace_seconds=0)
                finally:
                    await kube.close()

            asyncio.run(cleanup())


async def leaders(kube: Kube) -> list[str]:
    found = await kube.list(PODS, SYSTEM_NAMESPACE, label_selector=f"{LEADER_LABEL}={LEASE}")
    return sorted(p["metadata"]["name"] for p in found.get("items", []))


async def the_leader(kube: Kube, platform: Platform) -> str:
    """The one replica labelled leader (waiting until exactly one is)."""

    async def one() -> str | None:
        found = await leaders(kube)
        return found[0] if len(found) == 1 else None

    name: str = await eventually(one, 60, "exactly one autoscaler pod labelled leader", platform)
    return name


async def replicas(kube: Kube) -> int:
    deployment = await kube.get(DEPLOYMENTS, NS, "hello-00001-deployment")
    return int(deployment["spec"].get("replicas") or 0)


async def scaled_from_zero(kube: Kube, platform: Platform) -> None:
    """hello at zero, then a request that must wake it (the activator's stats reach the leader)."""
    await eventually(lambda: _at_zero(kube), 90, "hello at zero replicas", platform)
    async with aiohttp.ClientSession() as session:
        reply = await answer(session, platform, HOST)
    assert reply is not None, platform.logs()
    assert reply[1].strip() == "Hello Python Sample v1!"
    assert await replicas(kube) >= 1


async def _at_zero(kube: Kube) -> bool:
    """Scaled to zero and the last pod gone (a terminating pod could still serve the next request)."""
    if await replicas(kube) != 0:
        return False
    found = await kube.list(PODS, NS, label_selector="serving.knative.dev/revision=hello-00001")
    return not found.get("items")


async def test_one_replica_leads_and_the_other_refuses_stats(kube: Kube, platform: Platform) -> None:
    leader = await the_leader(kube, platform)
    standby = next(r for r in REPLICAS if r != leader)
    port = platform.components[standby].env["AUTOSCALER_PORT"]
    async with aiohttp.ClientSession() as session:

        async def standby_ready() -> bool:
            # The leader may hold the Lease before the other replica has even opened its port.
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    return response.status == 200
            except aiohttp.ClientConnectionError:
                return False

        # A standby is alive and ready: only the Service's selector skips it.
        await eventually(standby_ready, 30, "the standby answering /healthz", platform)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"ws://127.0.0.1:{port}/")
        assert refused.value.status == 503

    hello = hello_service()
    hello["metadata"]["namespace"] = NS
    await kube.create(SERVICES, NS, hello)
    await eventually(lambda: service_ready(kube, "hello", namespace=NS), 120, "Service hello Ready", platform)
    await scaled_from_zero(kube, platform)


async def test_a_killed_leader_is_replaced_when_its_lease_expires(kube: Kube, platform: Platform) -> None:
    leader = await the_leader(kube, platform)
    standby = next(r for r in REPLICAS if r != leader)
    killed = time.monotonic()
    await asyncio.to_thread(platform.components[leader].kill, signal.SIGKILL)

    async def took_over() -> bool:
        return await leaders(kube) == [standby]

    await eventually(took_over, 40, f"{standby} labelled leader after {leader} died", platform)
    took = time.monotonic() - killed
    print(f"takeover after SIGKILL: {took:.1f}s")
    assert took < 15 + 2 + 5  # the Lease's duration, a retry interval, and slack for a busy machine
    await scaled_from_zero(kube, platform)


async def test_a_stopped_leader_hands_over_at_once(kube: Kube, platform: Platform) -> None:
    leader = await the_leader(kube, platform)
    standby = next(r for r in REPLICAS if r != leader)
    await asyncio.to_thread(platform.components[standby].start)  # the killed replica, back as a standby
    await asyncio.sleep(3)  # its informers warm up
    assert await leaders(kube) == [leader]
    stopped = time.monotonic()
    await asyncio.to_thread(platform.components[leader].stop)

    async def took_over() -> bool:
        return await leaders(kube) == [standby]

    await eventually(took_over, 30, f"{standby} labelled leader after {leader} stopped", platform)
    took = time.monotonic() - stopped
    print(f"takeover after SIGTERM: {took:.1f}s")
    assert took < 10, "a stopping leader releases its Lease: no waiting out the 15 s duration"
    await scaled_from_zero(kube, platform)
