"""The platform's own processes against a test cluster: the controller, the autoscaler, the activator and the
ingress router, each a real `serving ...` process with `SERVING_PLATFORM_URL=kubernetes` and the cluster's
kubeconfig, as the chart runs them in pods (here on the host, which reaches every pod IP)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import yaml

from serving.kube.api import NAMESPACES, SERVICES, ApiError, Kube, Resource

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "charts/serving/crds/serving.knative.dev.yaml"
EVENTING_CRDS = ROOT / "charts/serving/crds/eventing.knative.dev.yaml"
DOMAIN = "example.com"
SYSTEM_NAMESPACE = "knative-serving"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Component:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self._close_log()  # the previous run's, when it exited by itself
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def send(self, sig: signal.Signals) -> None:
        """Send `sig` to the process group without waiting."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Platform:
    kubeconfig: Path
    log_dir: Path
    kubeconfigs: Mapping[str, Path] = field(default_factory=dict)
    """Per component, a kubeconfig other than `kubeconfig` (e.g. one with its ServiceAccount's token)."""
    system_namespace: str = SYSTEM_NAMESPACE
    autoscaler_config: str = "stable-window=6s,scale-to-zero-grace-period=2s"
    controller_env: Mapping[str, str] = field(default_factory=dict)
    autoscaler_env: Mapping[str, str] = field(default_factory=dict)
    activator_env: Mapping[str, str] = field(default_factory=dict)
    autoscaler_url: str = ""
    """Where the activator sends its stats; empty: straight to the autoscaler's port."""
    probe_secret: str = "probe-secret-of-the-test-platform"
    """As the chart's Secret gives it to the controller and the activator: pods require their tokens."""
    router_port: int = field(default_factory=free_port)
    activator_port: int = field(default_factory=free_port)
    activator_admin_port: int = field(default_factory=free_port)
    autoscaler_port: int = field(default_factory=free_port)
    router_admin_port: int = field(default_factory=free_port)
    eventing: bool = False
    """Also run Eventing: the controller with `EVENTING=true` and its feed, and the eventing component."""
    eventing_token: str = "eventing-token-of-the-test-platform"
    eventing_feed_port: int = field(default_factory=free_port)
    eventing_port: int = field(default_factory=free_port)
    eventing_admin_port: int = field(default_factory=free_port)
    components: dict[str, Component] = field(default_factory=dict)

    def _base_env(self, component: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVING_", "KUBERNETES_"))}
        kubeconfig = self.kubeconfigs.get(component, self.kubeconfig)
        env.update(KUBECONFIG=str(kubeconfig), LOG_FORMAT="text", LOG_LEVEL="INFO")
        return env

    def build(self) -> None:
        cli = [sys.executable, "-m", "controller.cli"]
        specs = {
            "controller": (
                [*cli, "controller", "--kubernetes"],
                {
                    "SYSTEM_NAMESPACE": self.system_namespace,
                    "SERVING_DOMAIN": DOMAIN,
                    "QUEUE_SIDECAR_IMAGE": "ghcr.io/serving/serving:test",
                    "QUEUE_DRAIN_TIMEOUT": "2s",
                    "POD_NAME": "controller-test",
                    "SERVING_PROBE_SECRET": self.probe_secret,
                    **self.controller_env,
                },
            ),
            "autoscaler": (
                [*cli, "autoscaler"],
                {
                    "SERVING_PLATFORM_URL": "kubernetes",
                    "AUTOSCALER_BIND_ADDRESS": "127.0.0.1",
                    "AUTOSCALER_PORT": str(self.autoscaler_port),
                    "AUTOSCALER_CONFIG": self.autoscaler_config,
                    **self.autoscaler_env,
                    "ACTIVATOR_URL": f"http://127.0.0.1:{self.activator_port}",
                },
            ),
            "activator": (
                [*cli, "activator"],
                {
                    "SERVING_PLATFORM_URL": "kubernetes",
                    "ACTIVATOR_BIND_ADDRESS": "127.0.0.1",
                    "ACTIVATOR_PORT": str(self.activator_port),
                    "ACTIVATOR_ADMIN_PORT": str(self.activator_admin_port),
                    "AUTOSCALER_URL": self.autoscaler_url or f"ws://127.0.0.1:{self.autoscaler_port}/",
                    "DRAIN_TIMEOUT": "0s",
                    "SERVING_PROBE_SECRET": self.probe_secret,
                    **self.activator_env,
                },
            ),
            "router": (
                [*cli, "router"],
                {
                    "ROUTER_BIND_ADDRESS": "127.0.0.1",
                    "ROUTER_PORT": str(self.router_port),
                    "ROUTER_ADMIN_PORT": str(self.router_admin_port),
                    "SERVING_DOMAIN": DOMAIN,
                    "ACTIVATOR_ADDRESS": f"127.0.0.1:{self.activator_port}",
                    "DRAIN_TIMEOUT": "4s",
                },
            ),
        }
        if self.eventing:
            specs["controller"][1].update(
                EVENTING="true",
                EVENTING_FEED_PORT=str(self.eventing_feed_port),
                EVENTING_TOKEN=self.eventing_token,
            )
            specs["eventing"] = (
                [*cli, "eventing"],
                {
                    "EVENTING_BIND_ADDRESS": "127.0.0.1",
                    "EVENTING_PORT": str(self.eventing_port),
                    "EVENTING_ADMIN_PORT": str(self.eventing_admin_port),
                    "EVENTING_DATA_DIR": str(self.log_dir / "eventing-data"),
                    "SERVING_PLATFORM_URL": f"http://127.0.0.1:{self.eventing_feed_port}",
                    "EVENTING_TOKEN": self.eventing_token,
                    # No cluster DNS here: Services' in-cluster addresses connect to the router directly.
                    "INGRESS_ADDRESS": f"127.0.0.1:{self.router_port}",
                },
            )
        for name, (argv, env) in specs.items():
            log = self.log_dir / f"{name}.log"
            self.components[name] = Component(name, argv, {**self._base_env(name), **env}, log)

    def start(self) -> None:
        if not self.components:
            self.build()
        for component in self.components.values():
            component.start()

    def stop(self) -> None:
        for component in reversed(list(self.components.values())):
            component.stop()

    def restart(self, name: str) -> None:
        component = self.components[name]
        component.kill()
        component.start()

    def logs(self) -> str:
        return "\n".join(f"--- {c.name} ---\n{c.tail()}" for c in self.components.values())

    def alive(self) -> dict[str, int | None]:
        return {n: (c.process.poll() if c.process else -1) for n, c in self.components.items()}


def wait_until(check: object, timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll the callable `check` until it returns true; raise AssertionError naming `what` after `timeout`."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


CRD = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False)
HELLO = ROOT / "examples/helloworld-python"


def hello_service(name: str = "hello", target: str = "Python Sample v1") -> dict[str, Any]:
    """The example's Service, with the app's folder as its working directory (the node agent runs the
    container's command, not its image)."""
    doc: dict[str, Any] = yaml.safe_load((HELLO / "service.yaml").read_text())
    doc["metadata"]["name"] = name
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["workingDir"] = str(HELLO)
    container["env"] = [{"name": "TARGET", "value": target}]
    return doc


async def install_crds(kubeconfig: Path, namespace: str) -> None:
    """The chart's CRDs, established, and the platform's `namespace` (both may exist already)."""
    kube = await Kube.connect(str(kubeconfig))
    try:
        docs = [d for path in (CRDS, EVENTING_CRDS) for d in yaml.safe_load_all(path.read_text())]
        for doc in docs:
            try:
                await kube.create(CRD, None, doc)
            except ApiError as exc:
                if not exc.conflict:
                    raise
        try:
            await kube.create(
                NAMESPACES,
                None,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            )
        except ApiError as exc:
            if not exc.conflict:
                raise
        deadline = time.monotonic() + 30
        for doc in docs:
            while True:
                crd = await kube.get(CRD, None, doc["metadata"]["name"])
                conditions = (crd.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    break
                assert time.monotonic() < deadline, f"CRD {doc['metadata']['name']} not established"
                await asyncio.sleep(0.2)
    finally:
        await kube.close()


async def eventually(check: Any, timeout: float, what: str, platform: Platform | None = None) -> Any:
    """Await `check()` until it returns something true; fail naming `what` (with the platform's logs)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except (ApiError, aiohttp.ClientError) as exc:
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


async def service_ready(
    kube: Kube, name: str, generation: int | None = None, namespace: str = "default"
) -> dict[str, Any] | None:
    obj = await kube.get(SERVICES, namespace, name)
    status = obj.get("status") or {}
    if not ready(obj):
        return None
    if generation is not None and status.get("observedGeneration") != generation:
        return None
    return obj


async def answer(session: aiohttp.ClientSession, platform: Platform, host: str) -> tuple[int, str] | None:
    """The router's 200 answer for `host`, or None (an error, a refused connection, another status)."""
    try:
        status, body = await get_text(session, platform, host)
    except aiohttp.ClientError:
        return None
    return (status, body) if status == 200 else None
