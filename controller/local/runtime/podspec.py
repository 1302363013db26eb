"""What a local pod runs: the user container's process and its queue-proxy's, built from a revision template.

The user container gets what the Knative runtime contract promises (`PORT`, `K_SERVICE`, `K_REVISION`,
`K_CONFIGURATION`) with `$(VAR)` expanded in `command`/`args`/`env` as the kubelet does; its declared
containerPort is replaced by a free port. The queue-proxy gets Knative's environment with every port moved to
a free loopback port and a short drain quiet period.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from controller.local.runtime.expansion import expand, expand_env
from controller.local.runtime.pod import PodPorts, PodProcesses
from controller.local.runtime.process import ProcessSpec
from serving.container import H2C
from serving.contract import queueproxy as qp_contract
from serving.contract.tracing import OFF, Tracing
from serving.template import RevisionTemplate

USER_CONTAINER: Final = "user-container"
USER_CONTAINER_NICE: Final = 5
"""Niceness added to user containers: on a Kubernetes node a container without a CPU request gets the least
CPU weight (BestEffort) while the queue-proxy, activator and autoscaler have requests, so a wide wake-up of
CPU-hungry apps cannot starve the data plane. Locally, the apps run at niceness 5 (a third of the weight of
the platform's processes when both want the CPU; no difference on an idle machine)."""
"""Knative's default name of the user container (also the log file name)."""
QUEUE_PROXY: Final = "queue-proxy"


@dataclass(frozen=True, slots=True, kw_only=True)
class PodContext:
    """Everything about a revision that its pods' processes need."""

    namespace: str
    service: str
    configuration: str
    revision: str
    template: RevisionTemplate
    base_dir: Path
    """The Service file's folder: `workingDir` is relative to it, and it is the default cwd."""
    log_dir: Path
    """Pod logs go to `log_dir/<namespace>/<service>/<pod>/<container>.log`."""
    drain_quiet_period: float
    """Seconds a terminating queue-proxy keeps accepting after the last request (Knative: 30)."""
    host_env: Mapping[str, str]
    """The environment of `serving up`, inherited by both processes (PATH, virtualenv...)."""
    probe_token: str = ""
    """The revision's probe token (`serving.contract.probe.probe_token`); empty: none required."""
    tracing: Tracing = OFF
    """Where the queue-proxy sends its spans; off by default."""


def pod_log_dir(log_dir: Path, namespace: str, service: str, pod: str) -> Path:
    return log_dir / namespace / service / pod


def queue_proxy_argv() -> tuple[str, ...]:
    return (sys.executable, "-m", "controller.cli", "queue-proxy")


def grace_seconds(ctx: PodContext) -> float:
    """SIGKILL deadline of a stopping pod: the revision timeout (as Knative) after the quiet period."""
    return float(ctx.template.timeout_seconds) + ctx.drain_quiet_period + 1.0


def user_env(ctx: PodContext, port: int) -> dict[str, str]:
    """The container's variables (expanded in order), then the runtime contract's, as Knative appends them."""
    contract = {
        "PORT": str(port),
        "K_REVISION": ctx.revision,
        "K_CONFIGURATION": ctx.configuration,
        "K_SERVICE": ctx.service,
    }
    env = expand_env(ctx.template.container.env)
    env.update(contract)
    return env


def readiness_probe_json(probe: Mapping[str, Any] | None) -> str:
    """The probe for `SERVING_READINESS_PROBE`, aimed at the user port whatever port the file names.

    Locally the app listens on a free port instead of its containerPort, so the probe's port is dropped and
    the queue-proxy fills in its `USER_PORT`, as Knative points probes at the user port.
    """
    if not probe:
        return ""
    data: dict[str, Any] = dict(probe)
    for handler in ("httpGet", "tcpSocket", "grpc"):
        action = data.get(handler)
        if isinstance(action, Mapping):
            data[handler] = {k: v for k, v in action.items() if k != "port"}
    return json.dumps(data, separators=(",", ":"))


def readiness_http_path(probe: Mapping[str, Any] | None) -> str | None:
    """The path an `httpGet` readiness probe asks for on the user port (None for TCP, HTTPS or another host),
    which the controller GETs itself to say why a pod is not ready."""
    action = (probe or {}).get("httpGet")
    if not isinstance(action, Mapping) or action.get("host"):
        return None
    if str(action.get("scheme", "HTTP")).upper() != "HTTP":
        return None
    path = str(action.get("path") or "/")
    return path if path.startswith("/") else f"/{path}"


def _path_with(path: str, directory: str) -> str:
    """`path` with `directory` appended if missing: tools installed beside `serving` (gunicorn) are found."""
    parts = path.split(os.pathsep) if path else []
    return os.pathsep.join([*parts, directory]) if directory not in parts else path


def pod_processes(ctx: PodContext, pod: str, ports: PodPorts) -> PodProcesses:
    container = ctx.template.container
    logs = pod_log_dir(ctx.log_dir, ctx.namespace, ctx.service, pod)
    env = user_env(ctx, ports.user)
    argv = tuple(expand(part, env) for part in (*container.command, *container.args))
    host = dict(ctx.host_env)
    host["PATH"] = _path_with(host.get("PATH", ""), str(Path(sys.executable).parent))
    cwd = ctx.base_dir / container.working_dir if container.working_dir else ctx.base_dir
    user = ProcessSpec(
        argv=argv,
        env={**host, **env},
        cwd=cwd,
        log_path=logs / f"{USER_CONTAINER}.log",
        nice=USER_CONTAINER_NICE,
    )
    template = ctx.template
    # The queue-proxy's whole environment comes from its contract (the dataclasses its own loader reads).
    qp_env = qp_contract.Config(
        identity=qp_contract.Identity(
            namespace=ctx.namespace,
            configuration=ctx.configuration,
            revision=ctx.revision,
            service=ctx.service,
            pod=pod,
            pod_ip="127.0.0.1",
        ),
        proxy=qp_contract.proxy_settings(
            template,
            user_port=ports.user,
            readiness_probe=readiness_probe_json(container.readiness_probe),
            probe_token=ctx.probe_token,
        ),
        ports=qp_contract.Ports(
            bind_address="127.0.0.1",
            serving=ports.serving,
            admin=ports.admin,
            stats=ports.stats,
            metrics=ports.metrics,
        ),
        drain=qp_contract.DrainSettings(quiet_period=ctx.drain_quiet_period),
        log=qp_contract.LogSettings(log_format="text"),
        tracing=ctx.tracing,
    ).to_env()
    queue_proxy = ProcessSpec(
        argv=queue_proxy_argv(),
        env={**host, **qp_env},
        cwd=logs,
        log_path=logs / f"{QUEUE_PROXY}.log",
    )
    return PodProcesses(
        queue_proxy=queue_proxy,
        user=user,
        # The controller's own look at an unready app speaks HTTP/1.1: for an h2c app it only checks the port.
        readiness_path=None if container.protocol == H2C else readiness_http_path(container.readiness_probe),
        probe_token=ctx.probe_token,
    )
