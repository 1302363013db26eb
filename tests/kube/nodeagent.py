"""A test node agent in place of the kubelet (and the scheduler): it registers a Node, binds every unscheduled
Pod to it, and runs each Pod's containers as local processes in the pod's own network namespace, with probes,
restarts with back-off, preStop hooks and graceful deletion, reporting all of it in the Pod's status.

Tests only: it runs as root and drives iproute2's `ip`. Images are ignored: a container must have a `command`,
resolved through the agent's PATH. Volumes, resources, security contexts and image pulls are not modelled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import json
import logging
import os
import re
import shlex
import shutil
import signal
import threading
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import client, config

log = logging.getLogger(__name__)

JSON = dict[str, Any]
CALL_TIMEOUT: Final = 10.0
"""Seconds any single non-watch API call may take."""
WATCH_SECONDS: Final = 120
"""The server ends each watch after this long; it is resumed from the last resourceVersion."""
IP_TIMEOUT: Final = 10.0
"""Seconds one `ip` command may take."""
KILL_WAIT: Final = 10.0
"""Seconds to wait for a SIGKILLed process to be reaped before giving up on it (with a log line)."""
BACKOFF_RESET: Final = 600.0
"""A container that ran this long without exiting starts its crash back-off over (the kubelet's 10 min)."""
DEFAULT_GRACE: Final = 30.0
"""terminationGracePeriodSeconds when the pod gives none (the API's default)."""
FIELD_PATHS: Final = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
)
"""The downward-API fields `valueFrom.fieldRef` may name (plus `metadata.labels[...]`/`annotations[...]`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeAgentConfig:
    """Everything the agent needs besides the kubeconfig."""

    log_dir: Path
    """Container output goes to `<log_dir>/<namespace>_<pod>_<uid[:8]>/<container>.log`, appended across
    restarts."""
    node_name: str = "test-node"
    bridge: str = "svbr0"
    """The host bridge every pod's veth joins; removed and made anew at start."""
    subnet: str = "10.244.0.0/24"
    """Pod addresses; its first host address sits on the bridge (the pods' gateway, the node's InternalIP)."""
    prefix: str = "svk"
    """Pod network namespaces are `<prefix>-<n>`, host-side veths `<prefix>h<n>`: anything so named is a
    leftover of this agent and is removed at start and stop."""
    path: str = field(default_factory=lambda: os.environ.get("PATH", os.defpath))
    """PATH that resolves `command[0]` and that every container gets."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra variables for every container process (under the pod's own env), e.g. a leak-check marker."""
    restart_backoff: float = 10.0
    """Seconds before the second restart of a crashing container, doubling after (the kubelet's 10 s)."""
    restart_backoff_max: float = 300.0
    """The back-off's ceiling (the kubelet's 5 min)."""
    heartbeat: float = 10.0
    """Seconds between renewals of the node's Lease (the kubelet's default)."""
    stop_grace: float = 5.0
    """Grace period each pod gets when the agent itself stops."""
    capacity: Mapping[str, str] = field(
        default_factory=lambda: {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    )

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> str:
        return str(self.network[1])


def pod_log_dir(log_dir: Path, namespace: str, name: str, uid: str) -> Path:
    """Where the containers of one pod write their output."""
    return log_dir / f"{namespace}_{name}_{uid[:8]}"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- the API ------------------------------------------------------------------------------------------------


class ApiError(Exception):
    """A non-2xx answer from the apiserver."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


TRANSIENT: Final = (ApiError, aiohttp.ClientError, OSError, TimeoutError)
"""What a call may raise while the apiserver restarts; loops log these and retry."""


class KubeApi:
    """The agent's only door to the apiserver: JSON dicts in and out, a timeout on every call."""

    def __init__(self, api_client: Any) -> None:
        self._client = api_client

    async def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None,
        body: Any,
        content_type: str,
        timeout: Any,
    ) -> Any:
        return await self._client.call_api(
            path,
            method,
            query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> JSON:
        resp = await self._send(method, path, query, body, content_type, CALL_TIMEOUT)
        async with resp:
            text = await resp.text()
            if resp.status >= 300:
                raise ApiError(resp.status, _message(text))
            data: JSON = json.loads(text) if text else {}
            return data

    async def merge_patch(self, path: str, body: JSON) -> JSON:
        return await self.call("PATCH", path, body=body, content_type="application/merge-patch+json")

    async def strategic_patch(self, path: str, body: JSON) -> JSON:
        """A strategic merge patch: lists with a merge key (conditions by `type`) merge item by item."""
        return await self.call(
            "PATCH", path, body=body, content_type="application/strategic-merge-patch+json"
        )

    async def watch(self, path: str, query: Mapping[str, str]) -> AsyncGenerator[JSON, None]:
        """The events of one watch request, until the server ends it (raises on a cut connection)."""
        timeout = aiohttp.ClientTimeout(
            connect=CALL_TIMEOUT, sock_connect=CALL_TIMEOUT, sock_read=WATCH_SECONDS + 30
        )
        resp = await self._send("GET", path, {**query, "watch": "true"}, None, "application/json", timeout)
        async with resp:
            if resp.status >= 300:
                raise ApiError(resp.status, _message(await resp.text()))
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        event: JSON = json.loads(line)
                        yield event


def _message(text: str) -> str:
    try:
        return str(json.loads(text).get("message", text))
    except (ValueError, AttributeError):
        return text[:500]


def _pod_path(namespace: str, name: str, sub: str = "") -> str:
    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}"
    return f"{path}/{sub}" if sub else path


# --- the pod network ----------------------------------------------------------------------------------------


class NetworkError(RuntimeError):
    """The pod network could not be set up (no iproute2, no permission for namespaces, a clashing subnet)."""


@dataclass(frozen=True, slots=True)
class Sandbox:
    """One pod's network: a namespace with `eth0` at `ip`, joined to the bridge by the veth `host_veth`."""

    netns: str
    ip: str
    host_veth: str


async def _ip(*args: str, stdin: str | None = None, check: bool = True) -> str:
    """Run `ip ARGS`; its stdout, or `NetworkError` with its stderr when it fails and `check`."""
    proc = await asyncio.create_subprocess_exec(
        "ip",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), IP_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise NetworkError(f"ip {' '.join(args)}: no answer within {IP_TIMEOUT:g}s") from None
    if check and proc.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)} exited with {proc.returncode}: {err.decode().strip()}")
    return out.decode()


def _kill_pids(pids: str) -> None:
    for pid in pids.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


class PodNetwork:
    """The node's pod network: a bridge holding the gateway address, and per pod a network namespace joined
    to it by a veth pair. The host reaches every pod address directly through the bridge."""

    def __init__(self, config: NodeAgentConfig) -> None:
        self.bridge = config.bridge
        self.prefix = config.prefix
        self.network = config.network
        self.gateway = config.gateway
        self._hosts = [str(ip) for ip in self.network.hosts()][1:]
        self._used: set[int] = set()
        self._next = 0

    async def setup(self) -> None:
        """Remove leftovers of an earlier run, check that namespaces work, then make the bridge."""
        if shutil.which("ip") is None:
            raise NetworkError("iproute2's `ip` is not on PATH: the node agent needs it for pod networking")
        await self.cleanup()
        probe = f"{self.prefix}-probe"
        try:
            await _ip("netns", "add", probe)
        except NetworkError as exc:
            raise NetworkError(
                f"cannot create network namespaces (the agent must run as root): {exc}"
            ) from exc
        await _ip("netns", "del", probe)
        await self._check_subnet_free()
        prefix_len = self.network.prefixlen
        await _ip(
            "-batch",
            "-",
            stdin=f"link add {self.bridge} type bridge\n"
            f"addr add {self.gateway}/{prefix_len} dev {self.bridge}\n"
            f"link set {self.bridge} up\n",
        )
        log.info("pod network %s on bridge %s (gateway %s)", self.network, self.bridge, self.gateway)

    async def _check_subnet_free(self) -> None:
        for iface in json.loads(await _ip("-j", "-4", "addr", "show") or "[]"):
            for addr in iface.get("addr_info", []):
                net = ipaddress.IPv4Interface(f"{addr['local']}/{addr['prefixlen']}").network
                if net.overlaps(self.network):
                    raise NetworkError(
                        f"pod subnet {self.network} overlaps {net} on {iface['ifname']}: choose another"
                    )

    async def cleanup(self) -> None:
        """Kill what runs in, and delete, every namespace and link named like ours; delete the bridge."""
        for ns in json.loads(await _ip("-j", "netns", "list") or "[]"):
            name = str(ns.get("name", ""))
            if name.startswith(f"{self.prefix}-"):
                _kill_pids(await _ip("netns", "pids", name, check=False))
                await _ip("netns", "del", name, check=False)
        for link in json.loads(await _ip("-j", "link", "show") or "[]"):
            name = str(link.get("ifname", ""))
            if name.startswith(f"{self.prefix}h") or name == self.bridge:
                await _ip("link", "del", name, check=False)

    def allocate(self) -> str:
        """The next free pod address, round robin (a recently freed address is reused last)."""
        for _ in range(len(self._hosts)):
            index, self._next = self._next, (self._next + 1) % len(self._hosts)
            if index not in self._used:
                self._used.add(index)
                return self._hosts[index]
        raise NetworkError(f"pod subnet {self.network} is full")

    async def attach(self, ip: str) -> Sandbox:
        """A namespace with loopback up and `eth0` at `ip`, default route via the bridge."""
        index = self._hosts.index(ip)
        box = Sandbox(f"{self.prefix}-{index}", ip, f"{self.prefix}h{index}")
        try:
            await _ip(
                "-batch",
                "-",
                stdin=f"netns add {box.netns}\n"
                f"link add {box.host_veth} type veth peer name eth0 netns {box.netns}\n"
                f"link set {box.host_veth} master {self.bridge} up\n",
            )
            await _ip(
                "-n",
                box.netns,
                "-batch",
                "-",
                stdin=f"link set lo up\naddr add {ip}/{self.network.prefixlen} dev eth0\nlink set eth0 up\n"
                f"route add default via {self.gateway}\n",
            )
        except BaseException:
            await self.detach(box)
            raise
        return box

    async def detach(self, box: Sandbox) -> None:
        """Kill whatever still runs in the namespace, delete the veth pair and the namespace."""
        _kill_pids(await _ip("netns", "pids", box.netns, check=False))
        await _ip("link", "del", box.host_veth, check=False)
        await _ip("netns", "del", box.netns, check=False)

    def release(self, ip: str) -> None:
        with contextlib.suppress(ValueError):
            self._used.discard(self._hosts.index(ip))

    async def teardown(self) -> None:
        await self.cleanup()


# --- containers ---------------------------------------------------------------------------------------------


class ConfigError(Exception):
    """A container cannot start as specified; `reason` goes to its waiting state. A permanent one is not
    retried (nothing the API could change makes it startable)."""

    def __init__(self, reason: str, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.permanent = permanent


_VAR_REF: Final = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion: a defined VAR is replaced, an undefined one kept, `$$` is `$`."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return _VAR_REF.sub(sub, text)


def _exit_code(returncode: int) -> int:
    """asyncio's -N (killed by signal N) as a container runtime reports it: 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class Container:
    """One container of a pod: its process, its probes and its restarts; `status()` is its containerStatus.

    Runs on the agent's loop only. The supervisor task (`run`) owns the process until `stop` cancels it.
    """

    def __init__(self, pod: PodWorker, spec: JSON, *, init: bool = False) -> None:
        self.pod = pod
        self.spec = spec
        self.name = str(spec["name"])
        self.init = init
        self.restart_count = 0
        self.state: JSON = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: JSON = {}
        self.ready = False
        self.started = False
        self.ever_ran = False
        self.final = False
        self.exit_code: int | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def log_path(self) -> Path:
        return self.pod.log_dir / f"{self.name}.log"

    def status(self) -> JSON:
        return {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "containerID": f"serving-test://{self.pod.uid}/{self.name}/{self.restart_count}",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }

    def _set(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        self.pod.notify()

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"container {self.pod.key}/{self.name}")

    async def run(self) -> None:
        """Start the process and restart it as the pod's restartPolicy says, until it is final."""
        policy = self.pod.spec.get("restartPolicy", "Always")
        crashes = 0
        while True:
            try:
                argv, env, cwd = await self._prepare()
            except ConfigError as exc:
                log.warning("%s/%s: %s: %s", self.pod.key, self.name, exc.reason, exc)
                self._set(state={"waiting": {"reason": exc.reason, "message": str(exc)}})
                if exc.permanent:
                    return
                crashes += 1
                await asyncio.sleep(self._backoff(crashes))
                continue
            began = time.monotonic()
            code = await self._run_once(argv, env, cwd)
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if self.init and code == 0:
                restart = False
            if not restart:
                self._set(final=True)
                return
            crashes = 1 if time.monotonic() - began >= BACKOFF_RESET else crashes + 1
            delay = self._backoff(crashes)
            self.last_state = self.state
            if delay > 0:
                message = f"back-off {delay:g}s restarting failed container={self.name} pod={self.pod.key}"
                self._set(state={"waiting": {"reason": "CrashLoopBackOff", "message": message}})
                await asyncio.sleep(delay)
            self.restart_count += 1

    def _backoff(self, crashes: int) -> float:
        """The first restart is immediate, then base, 2·base, … up to the ceiling (the kubelet's)."""
        if crashes <= 1:
            return 0.0
        cfg = self.pod.agent.config
        return float(min(cfg.restart_backoff * 2 ** (crashes - 2), cfg.restart_backoff_max))

    async def _prepare(self) -> tuple[list[str], dict[str, str], str]:
        command = list(self.spec.get("command") or [])
        if not command:
            raise ConfigError(
                "CreateContainerError",
                "container has no command: the test node agent ignores images, so every container needs one",
                permanent=True,
            )
        env = await self.pod.container_env(self.spec)
        argv = [expand(str(arg), env) for arg in [*command, *(self.spec.get("args") or [])]]
        cfg = self.pod.agent.config
        if "/" not in argv[0]:
            resolved = shutil.which(argv[0], path=cfg.path)
            if resolved is None:
                raise ConfigError("RunContainerError", f"{argv[0]!r}: executable file not found in $PATH")
            argv[0] = resolved
        cwd = str(self.spec.get("workingDir") or "/")  # a missing one fails the start: StartError
        return argv, {"PATH": cfg.path, "HOME": "/root", "HOSTNAME": self.pod.name, **cfg.env, **env}, cwd

    async def _run_once(self, argv: list[str], env: dict[str, str], cwd: str) -> int:
        """One life of the process: start it, probe it, wait for its exit (or kill it when not live)."""
        sandbox = self.pod.sandbox
        assert sandbox is not None
        with self.log_path.open("ab") as out:
            line = shlex.join(argv).replace("\n", "\\n")
            line = line if len(line) <= 200 else line[:200] + "…"
            out.write(f"--- {_now()} starting {self.name} (restart {self.restart_count}): {line}\n".encode())
            out.flush()
            try:
                self.process = await asyncio.create_subprocess_exec(
                    "ip",
                    "netns",
                    "exec",
                    sandbox.netns,
                    *argv,
                    env=env,
                    cwd=cwd,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                self._terminated(128, _now(), "StartError", str(exc))
                return 128
        started_at = _now()
        startup = self.spec.get("startupProbe")
        self._set(
            state={"running": {"startedAt": started_at}},
            ever_ran=True,
            started=startup is None,
            ready=startup is None and self.spec.get("readinessProbe") is None,
        )
        unhealthy = asyncio.Event()
        probes = asyncio.create_task(self._probe(unhealthy), name=f"probes {self.pod.key}/{self.name}")
        exited = asyncio.create_task(self.process.wait())
        killed = asyncio.create_task(unhealthy.wait())
        try:
            await asyncio.wait({exited, killed}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                log.info("%s/%s: liveness probe failed: restarting", self.pod.key, self.name)
                await self._kill(self.process, time.monotonic() + self.pod.grace_period())
            code = _exit_code(await self.process.wait())
        finally:
            for task in (probes, killed, exited):
                task.cancel()
        self._terminated(code, started_at, "Completed" if code == 0 else "Error")
        return code

    def _terminated(self, code: int, started_at: str, reason: str, message: str = "") -> None:
        state: JSON = {"exitCode": code, "reason": reason, "startedAt": started_at, "finishedAt": _now()}
        if message:
            state["message"] = message
        self._set(state={"terminated": state}, ready=False, started=False, exit_code=code)

    async def _kill(self, process: asyncio.subprocess.Process, deadline: float) -> int | None:
        """SIGTERM the process group, SIGKILL it at `deadline` (or when the pod is force-deleted); the
        exit code, None if it survived even SIGKILL."""
        if process.returncode is not None:
            return process.returncode
        _kill_group(process.pid, signal.SIGTERM)
        exited = asyncio.create_task(process.wait())
        hurry = asyncio.create_task(self.pod.hurry.wait())
        try:
            remaining = max(0.0, deadline - time.monotonic())
            await asyncio.wait({exited, hurry}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hurry.cancel()
            exited.cancel()
        if process.returncode is None:
            _kill_group(process.pid, signal.SIGKILL)
            try:
                await asyncio.wait_for(process.wait(), KILL_WAIT)
            except TimeoutError:
                log.error("%s/%s: pid %d survived SIGKILL", self.pod.key, self.name, process.pid)
        return process.returncode

    async def stop(self, deadline: float) -> None:
        """End the supervisor (no more restarts), then SIGTERM the process, SIGKILL at `deadline`."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task})
        process = self.process
        if process is not None and process.returncode is None:
            started_at = self.state.get("running", {}).get("startedAt", _now())
            code = await self._kill(process, deadline)
            if code is not None:
                self._terminated(_exit_code(code), started_at, "Error")
        self._set(final=True, ready=False)

    async def hook_then_stop(self, deadline: float) -> None:
        """The preStop hook (cut off at `deadline`), then SIGTERM and SIGKILL at `deadline`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.pre_stop(deadline), max(0.0, deadline - time.monotonic()))
        await self.stop(deadline)

    async def pre_stop(self, deadline: float) -> None:
        """Run the container's preStop hook, if any, within `deadline`; failures are logged only."""
        hook = (self.spec.get("lifecycle") or {}).get("preStop")
        if not hook or self.process is None or self.process.returncode is not None:
            return
        timeout = max(0.0, deadline - time.monotonic())
        try:
            if "sleep" in hook:
                await asyncio.sleep(min(float(hook["sleep"].get("seconds", 0)), timeout))
            else:
                ok, detail = await self.pod.agent.prober.check(self, hook, timeout)
                if not ok:
                    log.warning("%s/%s: preStop hook failed: %s", self.pod.key, self.name, detail)
        except Exception:
            log.exception("%s/%s: preStop hook", self.pod.key, self.name)

    # --- probes ---

    async def _probe(self, unhealthy: asyncio.Event) -> None:
        """Startup probe first (when given), then readiness and liveness side by side."""
        startup = self.spec.get("startupProbe")
        if startup is not None:
            if not await self._probe_loop(startup, "startup"):
                unhealthy.set()
                return
            self._set(started=True, ready=self.spec.get("readinessProbe") is None)
        async with asyncio.TaskGroup() as group:
            if (readiness := self.spec.get("readinessProbe")) is not None:
                group.create_task(self._probe_loop(readiness, "readiness"))
            if (liveness := self.spec.get("livenessProbe")) is not None:
                group.create_task(self._liveness(liveness, unhealthy))

    async def _liveness(self, probe: JSON, unhealthy: asyncio.Event) -> None:
        if not await self._probe_loop(probe, "liveness"):
            unhealthy.set()

    async def _probe_loop(self, probe: JSON, kind: str) -> bool:
        """Probe every periodSeconds. Readiness runs until cancelled, setting `ready` at the thresholds;
        startup returns True on its first success; startup and liveness return False at failureThreshold."""
        period = float(probe.get("periodSeconds", 10))
        timeout = float(probe.get("timeoutSeconds", 1))
        success_threshold = int(probe.get("successThreshold", 1))
        failure_threshold = int(probe.get("failureThreshold", 3))
        successes = failures = 0
        await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
        while True:
            ok, detail = await self.pod.agent.prober.check(self, probe, timeout)
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if kind == "readiness":
                if ok and successes >= success_threshold and not self.ready:
                    self._set(ready=True)
                elif not ok and failures >= failure_threshold and self.ready:
                    log.info("%s/%s: not ready: %s", self.pod.key, self.name, detail)
                    self._set(ready=False)
            elif ok and kind == "startup":
                return True
            elif failures >= failure_threshold and kind != "readiness":
                log.info(
                    "%s/%s: %s probe failed %d times: %s", self.pod.key, self.name, kind, failures, detail
                )
                return False
            await asyncio.sleep(period)


class Prober:
    """Runs probe and hook handlers (`httpGet`, `tcpSocket`, `exec`) against a container's pod."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def check(self, container: Container, handler: JSON, timeout: float) -> tuple[bool, str]:
        """(success, detail); never raises for a failing target."""
        try:
            if "httpGet" in handler:
                return await self._http(container, handler["httpGet"], timeout)
            if "tcpSocket" in handler:
                return await self._tcp(container, handler["tcpSocket"], timeout)
            if "exec" in handler:
                return await self._exec(container, handler["exec"], timeout)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return (
            False,
            f"unsupported handler {sorted(handler)} (the test node agent knows httpGet, tcpSocket, exec)",
        )

    @staticmethod
    def _port(container: Container, port: Any) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for declared in container.spec.get("ports") or []:
            if declared.get("name") == port:
                return int(declared["containerPort"])
        raise ValueError(f"no container port named {port!r}")

    @staticmethod
    def _host(container: Container, handler: JSON) -> str:
        host = handler.get("host") or (container.pod.sandbox.ip if container.pod.sandbox else "")
        if not host:
            raise ValueError("the pod has no address")
        return str(host)

    async def _http(self, container: Container, get: JSON, timeout: float) -> tuple[bool, str]:
        scheme = str(get.get("scheme", "HTTP")).lower()
        host, port = self._host(container, get), self._port(container, get["port"])
        url = f"{scheme}://{host}:{port}{get.get('path', '/')}"
        headers = {"User-Agent": "kube-probe/1.37", "Accept": "*/*"}
        headers.update({h["name"]: h["value"] for h in get.get("httpHeaders") or []})
        async with self._session.get(
            url,
            headers=headers,
            allow_redirects=False,
            ssl=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            await resp.read()
            return 200 <= resp.status < 400, f"GET {url}: {resp.status}"

    async def _tcp(self, container: Container, sock: JSON, timeout: float) -> tuple[bool, str]:
        host, port = self._host(container, sock), self._port(container, sock["port"])
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True, f"connected to {host}:{port}"

    async def _exec(self, container: Container, spec: JSON, timeout: float) -> tuple[bool, str]:
        sandbox = container.pod.sandbox
        command = [str(c) for c in spec.get("command") or []]
        if sandbox is None or not command:
            return False, "no sandbox or no command"
        cfg = container.pod.agent.config
        exe = shutil.which(command[0], path=cfg.path) if "/" not in command[0] else command[0]
        if exe is None:
            return False, f"{command[0]!r}: executable file not found in $PATH"
        proc = await asyncio.create_subprocess_exec(
            "ip",
            "netns",
            "exec",
            sandbox.netns,
            exe,
            *command[1:],
            env={"PATH": cfg.path, **cfg.env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            _kill_group(proc.pid, signal.SIGKILL)
            await proc.wait()
            return False, f"{command} timed out after {timeout:g}s"
        return code == 0, f"{command} exited with {code}"


# --- pods ---------------------------------------------------------------------------------------------------


def _condition(pod: JSON, kind: str) -> JSON | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            found: JSON = cond
            return found
    return None


class PodWorker:
    """One pod bound to this node: its sandbox, its containers, its status writer and its termination.

    Lives on the agent's loop; `pod` is the newest object the watch delivered.
    """

    def __init__(self, agent: NodeAgent, pod: JSON) -> None:
        self.agent = agent
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.key = f"{self.namespace}/{self.name}"
        self.spec: JSON = pod["spec"]
        self.log_dir = pod_log_dir(agent.config.log_dir, self.namespace, self.name, self.uid)
        self.init_containers = [Container(self, c, init=True) for c in self.spec.get("initContainers") or []]
        self.containers = [Container(self, c) for c in self.spec.get("containers") or []]
        self.ip: str | None = None
        self.sandbox: Sandbox | None = None
        self.initialized = not self.init_containers
        self.error: str | None = None
        self.start_time = _now()
        self.hurry = asyncio.Event()
        self._transitions: dict[str, tuple[str, str]] = {}
        self._dirty = asyncio.Event()
        self._written: JSON | None = None
        self._run: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._termination: asyncio.Task[None] | None = None

    def notify(self) -> None:
        self._dirty.set()

    def grace_period(self) -> float:
        meta_grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        grace = meta_grace if meta_grace is not None else self.spec.get("terminationGracePeriodSeconds")
        return float(DEFAULT_GRACE if grace is None else grace)

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._run = asyncio.create_task(self._lifecycle(), name=f"pod {self.key}")
        self._writer = asyncio.create_task(self._write_status(), name=f"status {self.key}")

    def update(self, pod: JSON) -> None:
        """A newer object from the watch (labels, readiness-gate conditions, deletion)."""
        self.pod = pod
        self.notify()

    async def _lifecycle(self) -> None:
        """Sandbox, then init containers one by one, then the containers; tear down once all are final."""
        try:
            ip = self.agent.network.allocate()
            try:
                self.sandbox = await self.agent.network.attach(ip)
            except BaseException:
                self.agent.network.release(ip)
                raise
            self.ip = ip
            self.notify()
            for init in self.init_containers:
                init.start()
                assert init.task is not None
                await init.task
                if init.exit_code != 0:
                    return
            self.initialized = True
            for container in self.containers:
                container.start()
            await asyncio.gather(*(c.task for c in self.containers if c.task is not None))
            await self._teardown()
        except Exception as exc:
            log.exception("pod %s failed to run", self.key)
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.notify()

    async def _teardown(self) -> None:
        sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None:
            await self.agent.network.detach(sandbox)
            self.agent.network.release(sandbox.ip)

    def terminate(self, *, finish: bool, grace: float | None = None) -> asyncio.Task[None]:
        """Stop the pod (once): preStop hooks, SIGTERM, SIGKILL after the grace period, sandbox removal;
        with `finish`, then delete the Pod object for good (as the kubelet does after a graceful delete)."""
        if grace == 0:
            self.hurry.set()
        if self._termination is None:
            self._termination = asyncio.create_task(
                self._terminate(finish, grace), name=f"terminate {self.key}"
            )
        return self._termination

    async def _terminate(self, finish: bool, grace: float | None) -> None:
        began = time.monotonic()
        seconds = self.grace_period() if grace is None else grace
        deadline = began + seconds
        log.info("pod %s: stopping (grace %gs%s)", self.key, seconds, ", then delete" if finish else "")
        try:
            if self._run is not None and not self._run.done():
                self._run.cancel()
                await asyncio.wait({self._run})
            # Each container on its own, as the kubelet kills them: its preStop hook, then SIGTERM. A
            # container without a hook gets SIGTERM at once, while another's hook may still run (Knative
            # relies on this: the queue-proxy drains on SIGTERM while the app's preStop hook waits for it).
            everything = [*self.init_containers, *self.containers]
            await asyncio.gather(*(c.hook_then_stop(deadline) for c in everything))
            await self._teardown()
            log.info("pod %s: stopped in %.1fs", self.key, time.monotonic() - began)
            if finish:
                try:
                    await self._flush_status()
                except TRANSIENT as exc:  # best effort: the object may be gone already (a forced delete)
                    log.info("pod %s: final status not written: %s", self.key, exc)
                await self.agent.finish_deletion(self.pod)
        except Exception:
            log.exception("pod %s: termination", self.key)
        finally:
            if self._writer is not None:
                self._writer.cancel()
                await asyncio.wait({self._writer})

    # --- status ---

    def _transition(self, kind: str, status: bool, reason: str = "", message: str = "") -> JSON:
        """The condition, keeping its lastTransitionTime while its status stays. Reason and message are
        explicit nulls when not given: the patch merges conditions by type, so stale ones must be removed."""
        value = "True" if status else "False"
        previous = self._transitions.get(kind)
        if previous is None or previous[0] != value:
            self._transitions[kind] = previous = (value, _now())
        return {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": previous[1],
            "reason": None if status or not reason else reason,
            "message": None if status or not message else message,
        }

    def phase(self) -> str:
        """The kubelet's rule, simplified: Pending until every container ran once, Running while any may
        still run, then Succeeded or Failed."""
        if not self.initialized:
            failed_init = any(c.final and c.exit_code not in (None, 0) for c in self.init_containers)
            return "Failed" if failed_init or self.error else "Pending"
        if self.containers and all(c.final for c in self.containers):
            return "Failed" if any(c.exit_code != 0 for c in self.containers) else "Succeeded"
        if self.error or any(not c.ever_ran and not c.final for c in self.containers):
            return "Pending"
        return "Running"

    def status(self) -> JSON:
        phase = self.phase()
        unready = [c.name for c in self.containers if not c.ready]
        containers_ready = self.initialized and not unready
        gates = [g["conditionType"] for g in self.spec.get("readinessGates") or []]
        gates_open = all((_condition(self.pod, g) or {}).get("status") == "True" for g in gates)
        running = phase == "Running"
        not_ready = f"containers with unready status: [{' '.join(unready)}]"
        scheduled = _condition(self.pod, "PodScheduled") or self._transition("PodScheduled", True)
        conditions = [
            scheduled,
            self._transition("PodReadyToStartContainers", self.sandbox is not None or self.ip is not None),
            self._transition("Initialized", self.initialized, "ContainersNotInitialized", "init containers"),
            self._transition(
                "ContainersReady", containers_ready and running, "ContainersNotReady", not_ready
            ),
            self._transition(
                "Ready",
                containers_ready and running and gates_open,
                "ContainersNotReady" if not containers_ready else "ReadinessGatesNotReady",
                not_ready if not containers_ready else f"readiness gates {gates}",
            ),
        ]
        gateway = self.agent.config.gateway
        status: JSON = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": gateway,
            "hostIPs": [{"ip": gateway}],
            "startTime": self.start_time,
            "containerStatuses": [c.status() for c in self.containers],
            "reason": None,
            "message": self.error,
        }
        if self.ip is not None:
            status.update(podIP=self.ip, podIPs=[{"ip": self.ip}])
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        return status

    async def _write_status(self) -> None:
        """PATCH the status whenever it differs from what was last written; retries while the API is away."""
        pause = 0.1
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                if await self._flush_status():
                    pause = 0.1
            except TRANSIENT as exc:
                if isinstance(exc, ApiError) and exc.status in (404, 409):
                    return  # gone, or another pod of the same name (the uid in the patch is a precondition)
                log.warning("pod %s: status not written (%s); retrying", self.key, exc)
                self._dirty.set()
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _flush_status(self) -> bool:
        status = self.status()
        if status == self._written:
            return False
        path = _pod_path(self.namespace, self.name, "status")
        # Strategic, as the kubelet's: conditions merge by type, so those others own (readiness gates) stay;
        # the uid is a precondition (a new pod of the same name is not this one).
        patch = {"metadata": {"uid": self.uid}, "status": status}
        self.pod = await self.agent.api.strategic_patch(path, patch)
        self._written = status
        return True

    async def container_env(self, spec: JSON) -> dict[str, str]:
        """The container's variables in order (`envFrom` first, then `env` with `$(VAR)` expansion)."""
        env: dict[str, str] = {}
        for source in spec.get("envFrom") or []:
            prefix = str(source.get("prefix", ""))
            for kind, ref in (
                ("configmaps", source.get("configMapRef")),
                ("secrets", source.get("secretRef")),
            ):
                if ref is not None:
                    data = await self._read_data(kind, ref["name"], optional=bool(ref.get("optional")))
                    env.update({prefix + k: v for k, v in data.items()})
        for var in spec.get("env") or []:
            name = str(var["name"])
            if "valueFrom" not in var:
                env[name] = expand(str(var.get("value", "")), env)
                continue
            source = var["valueFrom"]
            if "fieldRef" in source:
                env[name] = self._field(str(source["fieldRef"]["fieldPath"]))
            elif "configMapKeyRef" in source or "secretKeyRef" in source:
                kind = "configmaps" if "configMapKeyRef" in source else "secrets"
                ref = source.get("configMapKeyRef") or source["secretKeyRef"]
                data = await self._read_data(kind, ref["name"], optional=bool(ref.get("optional")))
                if ref["key"] in data:
                    env[name] = data[ref["key"]]
                elif not ref.get("optional"):
                    raise ConfigError(
                        "CreateContainerConfigError", f"{kind} {ref['name']} has no key {ref['key']}"
                    )
            else:
                raise ConfigError(
                    "CreateContainerConfigError",
                    f"env {name}: unsupported source {sorted(source)}",
                    permanent=True,
                )
        return env

    async def _read_data(self, kind: str, name: str, *, optional: bool) -> dict[str, str]:
        path = f"/api/v1/namespaces/{quote(self.namespace, safe='')}/{kind}/{quote(name, safe='')}"
        try:
            obj = await self.agent.api.call("GET", path)
        except ApiError as exc:
            if exc.status == 404 and optional:
                return {}
            raise ConfigError("CreateContainerConfigError", f"{kind} {name}: {exc}") from exc
        data = {k: str(v) for k, v in (obj.get("data") or {}).items()}
        if kind == "secrets":
            data = {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
        return data

    def _field(self, path: str) -> str:
        meta = self.pod["metadata"]
        if match := re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path):
            return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
        if path not in FIELD_PATHS:
            raise ConfigError("CreateContainerConfigError", f"unsupported fieldRef {path}", permanent=True)
        values = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.agent.config.node_name,
            "spec.serviceAccountName": str(self.spec.get("serviceAccountName", "default")),
            "status.hostIP": self.agent.config.gateway,
            "status.hostIPs": self.agent.config.gateway,
            "status.podIP": self.ip or "",
            "status.podIPs": self.ip or "",
        }
        return values[path]


# --- the agent ----------------------------------------------------------------------------------------------


class NodeAgent:
    """Registers the node and keeps it healthy, binds unscheduled pods, runs the pods bound to it.

    One list+watch on all pods drives everything; a `410 Gone` or a cut connection relists. Each pod runs in
    its own `PodWorker`, whose failures are logged and reported in that pod's status, never raised here.
    """

    def __init__(self, config: NodeAgentConfig, api: KubeApi) -> None:
        self.config = config
        self.api = api
        self.network = PodNetwork(config)
        self.workers: dict[str, PodWorker] = {}
        self._binding: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._prober: Prober | None = None
        self._node_since = _now()
        self._node_uid = ""

    @property
    def prober(self) -> Prober:
        assert self._prober is not None
        return self._prober

    async def run(self, started: Callable[[], None], stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then stop every pod and remove the pod network."""
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            self._prober = Prober(session)
            try:
                await self.network.setup()
                await self._register()
                started()
                loops = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._watch())]
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait([stopping, *loops], return_when=asyncio.FIRST_COMPLETED)
                for task in [stopping, *loops]:
                    task.cancel()
                await asyncio.wait([stopping, *loops])
                failed = [t.exception() for t in loops if not t.cancelled() and t.exception() is not None]
                if failed:
                    raise RuntimeError("a node agent loop ended") from failed[0]
            finally:
                await self._shutdown()

    async def _shutdown(self) -> None:
        grace = self.config.stop_grace
        ends = [w.terminate(finish=False, grace=grace) for w in self.workers.values()]
        if ends:
            await asyncio.wait(ends, timeout=grace + KILL_WAIT + 5)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        try:
            await self.network.teardown()
        except NetworkError:  # logged, so that what ended the agent (maybe the network setup) is raised
            log.exception("pod network teardown failed")

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the node ---

    def _node_status(self) -> JSON:
        now = _now()

        def cond(kind: str, status: str, reason: str, message: str) -> JSON:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": self._node_since,
            }

        return {
            "capacity": dict(self.config.capacity),
            "allocatable": dict(self.config.capacity),
            "conditions": [
                cond(
                    "MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"
                ),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond(
                    "PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"
                ),
                cond("Ready", "True", "KubeletReady", "test node agent is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.config.gateway},
                {"type": "Hostname", "address": self.config.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "serving-test",
                "systemUUID": "serving-test",
                "bootID": "serving-test",
                "kernelVersion": os.uname().release,
                "osImage": "serving test node agent",
                "containerRuntimeVersion": "serving-test://1",
                "kubeletVersion": "v1.37.0-test",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    async def _register(self) -> None:
        """Create (or take over) the Node, post Ready, drop the not-ready taint, take the Lease."""
        name = self.config.node_name
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
            "spec": {"podCIDR": self.config.subnet, "podCIDRs": [self.config.subnet]},
        }
        try:
            await self.api.call("POST", "/api/v1/nodes", body=node)
        except ApiError as exc:
            if exc.status != 409:
                raise
        await self.api.merge_patch(f"/api/v1/nodes/{name}/status", {"status": self._node_status()})
        current = await self.api.call("GET", f"/api/v1/nodes/{name}")
        self._node_uid = str(current["metadata"]["uid"])
        # TaintNodesByCondition adds this at creation; the node lifecycle controller (not run) would lift it.
        taints = [
            t for t in current["spec"].get("taints") or [] if t.get("key") != "node.kubernetes.io/not-ready"
        ]
        await self.api.merge_patch(f"/api/v1/nodes/{name}", {"spec": {"taints": taints or None}})
        await self._renew_lease()
        log.info("node %s registered", name)

    async def _renew_lease(self) -> None:
        name = self.config.node_name
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        spec = {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": _micro_now()}
        try:
            await self.api.merge_patch(path, {"spec": spec})
        except ApiError as exc:
            if exc.status != 404:
                raise
            owner = {"apiVersion": "v1", "kind": "Node", "name": name, "uid": self._node_uid}
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease", "ownerReferences": [owner]},
                "spec": spec,
            }
            await self.api.call("POST", path.rsplit("/", 1)[0], body=lease)

    async def _heartbeat(self) -> None:
        """Renew the Lease every `heartbeat` seconds; post the Ready condition every sixth time."""
        beat = 0
        while True:
            await asyncio.sleep(self.config.heartbeat)
            beat += 1
            try:
                await self._renew_lease()
                if beat % 6 == 0:
                    path = f"/api/v1/nodes/{self.config.node_name}/status"
                    await self.api.merge_patch(path, {"status": self._node_status()})
            except TRANSIENT as exc:
                log.warning("node heartbeat failed (%s); next in %gs", exc, self.config.heartbeat)

    # --- pods ---

    async def _watch(self) -> None:
        """List and watch all pods for ever; relist on `410 Gone`, reconnect with a short back-off."""
        version: str | None = None
        pause = 0.1
        while True:
            try:
                if version is None:
                    listing = await self.api.call("GET", "/api/v1/pods")
                    version = str(listing["metadata"]["resourceVersion"])
                    self._relisted(listing.get("items") or [])
                query = {
                    "resourceVersion": version,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": str(WATCH_SECONDS),
                }
                async with contextlib.aclosing(self.api.watch("/api/v1/pods", query)) as events:
                    async for event in events:
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            raise ApiError(int(obj.get("code", 500)), str(obj.get("message", "")))
                        version = str(obj["metadata"]["resourceVersion"])
                        pause = 0.1
                        if event["type"] == "DELETED":
                            self._vanished(obj["metadata"]["uid"])
                        elif event["type"] in ("ADDED", "MODIFIED"):
                            self._on_pod(obj)
            except TRANSIENT as exc:
                if isinstance(exc, ApiError) and exc.status == 410:
                    log.info("pod watch expired (%s): relisting", exc)
                    version = None
                    continue
                log.info("pod watch interrupted (%s); reconnecting in %gs", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _relisted(self, pods: list[JSON]) -> None:
        uids = set()
        for pod in pods:
            uids.add(pod["metadata"]["uid"])
            self._on_pod(pod)
        for uid in set(self.workers) - uids:
            self._vanished(uid)

    def _on_pod(self, pod: JSON) -> None:
        """Route one pod: bind it when unscheduled, run, update or terminate it when bound here."""
        try:
            meta, spec = pod["metadata"], pod["spec"]
            uid = meta["uid"]
            node = spec.get("nodeName")
            if not node:
                if self._schedulable(pod) and uid not in self._binding:
                    self._binding.add(uid)
                    self._spawn(self._bind(pod), f"bind {meta['name']}")
                return
            if node != self.config.node_name:
                return
            worker = self.workers.get(uid)
            deleting = meta.get("deletionTimestamp") is not None
            if worker is None:
                if deleting:
                    self._spawn(self.finish_deletion(pod), f"delete {meta['name']}")
                elif (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    self.workers[uid] = worker = PodWorker(self, pod)
                    worker.start()
                return
            worker.update(pod)
            if deleting:
                self._spawn(self._terminated(worker, worker.terminate(finish=True)), f"end {worker.key}")
        except Exception:
            log.exception("pod event not handled: %s", json.dumps(pod.get("metadata", {}))[:500])

    def _schedulable(self, pod: JSON) -> bool:
        meta, spec = pod["metadata"], pod["spec"]
        if meta.get("deletionTimestamp") or spec.get("schedulingGates"):
            return False
        if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
            return False
        labels = {
            "kubernetes.io/hostname": self.config.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }
        return all(labels.get(k) == v for k, v in (spec.get("nodeSelector") or {}).items())

    async def _bind(self, pod: JSON) -> None:
        meta = pod["metadata"]
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.config.node_name},
        }
        try:
            for attempt in range(10):
                try:
                    await self.api.call(
                        "POST", _pod_path(meta["namespace"], meta["name"], "binding"), body=binding
                    )
                    return
                except TRANSIENT as exc:
                    if isinstance(exc, ApiError) and exc.status in (404, 409):
                        return  # gone, or bound already
                    log.warning(
                        "binding %s/%s failed (%s), attempt %d", meta["namespace"], meta["name"], exc, attempt
                    )
                    await asyncio.sleep(0.2 * 2**attempt)
        finally:
            self._binding.discard(meta["uid"])

    def _vanished(self, uid: str) -> None:
        """The pod is gone from the API: kill its processes now, no hooks, no grace."""
        self._binding.discard(uid)
        worker = self.workers.get(uid)
        if worker is not None:
            self._spawn(
                self._terminated(worker, worker.terminate(finish=False, grace=0)), f"kill {worker.key}"
            )

    async def _terminated(self, worker: PodWorker, termination: asyncio.Task[None]) -> None:
        await asyncio.wait({termination})
        if self.workers.get(worker.uid) is worker:
            del self.workers[worker.uid]

    async def finish_deletion(self, pod: JSON) -> None:
        """Delete the Pod object for good (grace 0, this uid only), as the kubelet does once it stopped it."""
        meta = pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        for attempt in range(10):
            try:
                await self.api.call("DELETE", _pod_path(meta["namespace"], meta["name"]), body=body)
                return
            except TRANSIENT as exc:
                if isinstance(exc, ApiError) and exc.status in (404, 409):
                    return
                log.warning("deleting pod %s/%s failed (%s)", meta["namespace"], meta["name"], exc)
                await asyncio.sleep(0.2 * 2**attempt)


# --- a thread of its own ------------------------------------------------------------------------------------


class NodeAgentError(RuntimeError):
    """The node agent did not start, failed, or did not stop in time."""


class NodeAgentThread:
    """Runs a `NodeAgent` on its own thread and event loop, so tests on any loop (or none) share one node for
    the whole session. `start` returns once the node is registered; `stop` tears every pod and the network
    down and re-raises what ended the agent, if anything did."""

    def __init__(self, config: NodeAgentConfig, kubeconfig: Path) -> None:
        self.config = config
        self.kubeconfig = kubeconfig
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def start(self, timeout: float = 30.0) -> None:
        self._thread = threading.Thread(
            target=self._main, name=f"node-agent-{self.config.node_name}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            ended = not self._thread.is_alive()
            if ended or time.monotonic() > deadline:
                with contextlib.suppress(NodeAgentError):
                    self.stop()
                reason = f"failed to start: {self.error}" if ended else f"did not start within {timeout:g}s"
                raise NodeAgentError(f"the node agent {reason}") from self.error

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            log.exception("node agent ended")
            self.error = exc

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        async with client.ApiClient(configuration) as api_client:
            agent = NodeAgent(self.config, KubeApi(api_client))
            await agent.run(self._ready.set, self._stop)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the agent (pods killed after `stop_grace`, network removed); raise if it failed or hangs."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise NodeAgentError(f"the node agent did not stop within {timeout:g}s")
        self._thread = None
        if self.error is not None:
            raise NodeAgentError("the node agent failed") from self.error
