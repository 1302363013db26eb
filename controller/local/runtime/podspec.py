"""What a local pod runs: the user container's process and its queue-proxy's, built from a revision template.

The user container gets what the Knative runtime contract promises (`PORT`, `K_SERVICE`, `K_REVISION`,
`K_CONFIGURATION`) with `$(VAR)` expanded in `command`/`args`/`env` as the kubelet does. As a process, its
declared containerPort is replaced by a free port; as a container (`PodContext.runtime`), it listens on its
containerPort in its own network namespace, published on a free loopback port. The queue-proxy gets Knative's
environment with every port moved to a free loopback port and a short drain quiet period.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from controller.local.runtime.container import ContainerRun, ContainerRuntime, PodSandbox, container_name
from controller.local.runtime.expansion import expand
from controller.local.runtime.pod import PodPorts, PodProcesses, Sidecar
from controller.local.runtime.process import ProcessSpec
from controller.local.runtime.volume import VolumeSet
from serving.configdata import ConfigData
from serving.container import H2C, Container
from serving.contract import queueproxy as qp_contract
from serving.contract.tracing import OFF, Tracing
from serving.envsource import EnvSourceError, resolve_env
from serving.quantity import parse_quantity
from serving.template import RevisionTemplate

log = logging.getLogger(__name__)

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
    runtime: ContainerRuntime | None = None
    """The container runtime that runs the user container from its image; None: it runs as a process."""
    state_dir: Path | None = None
    """`serving up`'s state folder: names and labels its containers (required with `runtime`)."""
    configs: Callable[[str, str, str], ConfigData | None] = field(default=lambda kind, namespace, name: None)
    """Finds a ConfigMap or Secret (`kind`, namespace, name) as it is now: env is read at each start."""
    volumes: VolumeSet | None = None
    """Where container pods' volumes are written and tracked (required for a template with volumes)."""
    binding: Callable[[str, str], Mapping[str, str]] = field(default=lambda namespace, service: {})
    """The variables a SinkBinding gives the Service's containers now (`K_SINK`, `K_CE_OVERRIDES`), read at
    each start."""


def pod_log_dir(log_dir: Path, namespace: str, service: str, pod: str) -> Path:
    return log_dir / namespace / service / pod


def queue_proxy_argv() -> tuple[str, ...]:
    return (sys.executable, "-m", "controller.cli", "queue-proxy")


def grace_seconds(ctx: PodContext) -> float:
    """SIGKILL deadline of a stopping pod: the revision timeout (as Knative) after the quiet period."""
    return float(ctx.template.timeout_seconds) + ctx.drain_quiet_period + 1.0


def user_env(ctx: PodContext, port: int | None, container: Container | None = None) -> dict[str, str]:
    """The container's variables as the kubelet builds them now (`envFrom`, then `env` with ConfigMap and
    Secret values read at this moment and `$(VAR)` expanded in literals), then the runtime contract's, as
    Knative appends them (`PORT` to the serving container only: `port` None for a sidecar). Raises
    `EnvSourceError` for a missing ConfigMap, Secret or key not marked optional."""
    contract = {
        "K_REVISION": ctx.revision,
        "K_CONFIGURATION": ctx.configuration,
        "K_SERVICE": ctx.service,
    }
    if port is not None:
        contract = {"PORT": str(port), **contract}
    raw = _raw_container(ctx.template, container or ctx.template.container)
    resolved = resolve_env(raw, ctx.namespace, ctx.configs)
    if resolved.skipped:  # the kubelet's InvalidEnvironmentVariableNames event
        log.warning(
            "revision %s: envFrom keys skipped, not valid variable names: %s",
            ctx.revision,
            ", ".join(resolved.skipped),
        )
    env = resolved.variables(expand)
    env.update(contract)
    env.update(ctx.binding(ctx.namespace, ctx.service))
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


CLIENT_VARIABLES: Final = frozenset({"PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "LANG", "LC_ALL", "SHELL"})
CLIENT_PREFIXES: Final = ("XDG_", "CONTAINERS_", "CONTAINER_", "DOCKER_", "PODMAN_", "BUILDAH_", "REGISTRY_")
"""The host variables a container runtime's client reads (its socket, configuration, storage)."""
CLIENT_READS: Final = (
    "LD_",
    "GO",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_",
    "TMP",
    "TZ",
    "LC_",
    "LANG",
)
"""More names whose value changes how the client itself runs (the loader, Go's runtime, proxies...)."""


def _client_reads(name: str) -> bool:
    return name in CLIENT_VARIABLES or name.upper().startswith((*CLIENT_PREFIXES, *CLIENT_READS))


def _env_file(path: Path, env: Mapping[str, str]) -> Path | None:
    """`env` as `NAME=VALUE` lines in a new 0600 file at `path` (None when `env` is empty). Raises
    `EnvSourceError` for a value with a line break, which such a file cannot hold."""
    if not env:
        return None
    for name, value in env.items():
        if "\n" in value or "\r" in value:
            raise EnvSourceError(
                f"variable {name}: a value with a line break cannot reach a container under a name its "
                "runtime reads itself; rename the variable"
            )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"{name}={value}\n" for name, value in env.items())
    return path


def _client_host_env(host: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in host.items() if k in CLIENT_VARIABLES or k.startswith(CLIENT_PREFIXES)}


@dataclass(frozen=True, slots=True)
class ClientEnv:
    """How a container's variables reach it through the runtime's client, never on its command line."""

    names: tuple[str, ...]
    """Passed by name (`--env NAME`): their values travel in the client's environment."""
    env_file: Path | None
    """A 0600 file of the variables the client reads itself (PATH, HOME, proxies...)."""
    env: dict[str, str]
    """The client's environment: the variables passed by name, and what the client needs of the host's."""


def client_env(env: Mapping[str, str], env_file: Path, host: Mapping[str, str]) -> ClientEnv:
    """`env` split for the runtime's client (`env_file`: where the file goes, if one is needed). Raises
    `EnvSourceError` for a value with a line break that would have to go in the file."""
    by_name = {k: v for k, v in env.items() if not _client_reads(k)}
    return ClientEnv(
        tuple(by_name),
        _env_file(env_file, {k: v for k, v in env.items() if _client_reads(k)}),
        {**by_name, **_client_host_env(host)},
    )


def _raw_container(template: RevisionTemplate, container: Container) -> Mapping[str, Any]:
    """`container` as written in the template."""
    spec = template.raw.get("spec") if isinstance(template.raw, Mapping) else None
    containers = spec.get("containers") if isinstance(spec, Mapping) else None
    found = (
        containers[container.index]
        if isinstance(containers, list) and len(containers) > container.index
        else None
    )
    return found if isinstance(found, Mapping) else {}


def _releaser(volumes: VolumeSet | None, pod: str) -> Callable[[], None] | None:
    if volumes is None:
        return None
    return lambda: volumes.release(pod)


def _template_volumes(template: RevisionTemplate) -> list[Mapping[str, Any]]:
    spec = template.raw.get("spec") if isinstance(template.raw, Mapping) else None
    volumes = spec.get("volumes") if isinstance(spec, Mapping) else None
    return [v for v in volumes if isinstance(v, Mapping)] if isinstance(volumes, list) else []


def resource_limits(raw: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """A container's `resources.limits` as the runtime's `--cpus` and `--memory` (validated quantities; a zero
    limit and requests have no local meaning): a pod's containers and a ContainerSource's get them alike."""
    resources = raw.get("resources")
    limits = resources.get("limits") if isinstance(resources, Mapping) else None
    if not isinstance(limits, Mapping):
        return None, None
    cpu = parse_quantity(limits["cpu"]) if "cpu" in limits else Decimal(0)
    memory = parse_quantity(limits["memory"]) if "memory" in limits else Decimal(0)
    cpus = f"{cpu.normalize():f}" if cpu > 0 else None
    return cpus, int(memory.to_integral_value(rounding="ROUND_CEILING")) if memory > 0 else None


def _container_spec(
    ctx: PodContext, pod: str, ports: PodPorts, container: Container, log_path: Path, sandbox: str | None
) -> ProcessSpec:
    """A container run from its image by `ctx.runtime`: the runtime's client in the foreground. The serving
    container gets `PORT`; in a multi-container pod every container joins the pod's `sandbox`."""
    assert ctx.runtime is not None
    assert ctx.state_dir is not None
    assert container.image is not None
    serving = container is ctx.template.container
    raw = _raw_container(ctx.template, container)
    env = user_env(ctx, container.port if serving else None, container)
    folder = ctx.volumes.root if ctx.volumes is not None else ctx.state_dir
    client = client_env(env, folder / pod / f"..env-{container.index}", ctx.host_env)
    cpus, memory = resource_limits(raw)
    mounts: tuple[str, ...] = ()
    volumes = _template_volumes(ctx.template)
    if volumes:
        assert ctx.volumes is not None
        pod_volumes = ctx.volumes.for_pod(pod, volumes, ctx.namespace)
        mounts = pod_volumes.prepare(ctx.configs, raw.get("volumeMounts") or ())
    name = container_name(ctx.state_dir, pod)
    run = ContainerRun(
        runtime=ctx.runtime,
        name=f"{name}-{container.name}" if sandbox and not serving else name,
        image=container.image,
        pull_policy=str(raw.get("imagePullPolicy") or "IfNotPresent"),
        state_dir=ctx.state_dir,
        host_port=ports.user,
        container_port=container.port,
        env_names=client.names,
        env_file=client.env_file,
        command=tuple(expand(part, env) for part in container.command),
        args=tuple(expand(part, env) for part in container.args),
        working_dir=container.working_dir,
        cpus=cpus,
        memory=memory,
        mounts=mounts,
        pod=sandbox,
        labels=(
            ("serving.knative.dev/service", ctx.service),
            ("serving.knative.dev/revision", ctx.revision),
            ("dev.serving.local.pod", pod),
        ),
    )
    return ProcessSpec(
        argv=run.argv(),
        env=client.env,
        cwd=log_path.parent,
        log_path=log_path,
        container=run,
    )


def _process_user(ctx: PodContext, ports: PodPorts, log_path: Path, host: Mapping[str, str]) -> ProcessSpec:
    container = ctx.template.container
    env = user_env(ctx, ports.user)
    argv = tuple(expand(part, env) for part in (*container.command, *container.args))
    cwd = ctx.base_dir / container.working_dir if container.working_dir else ctx.base_dir
    return ProcessSpec(
        argv=argv,
        env={**host, **env},
        cwd=cwd,
        log_path=log_path,
        nice=USER_CONTAINER_NICE,
    )


def pod_processes(ctx: PodContext, pod: str, ports: PodPorts) -> PodProcesses:
    container = ctx.template.container
    logs = pod_log_dir(ctx.log_dir, ctx.namespace, ctx.service, pod)
    host = dict(ctx.host_env)
    host["PATH"] = _path_with(host.get("PATH", ""), str(Path(sys.executable).parent))
    log_path = logs / f"{USER_CONTAINER}.log"

    sandbox: PodSandbox | None = None
    if ctx.runtime is not None and ctx.template.sidecars:
        assert ctx.state_dir is not None
        sandbox = PodSandbox(
            runtime=ctx.runtime,
            name=f"{container_name(ctx.state_dir, pod)}-pod",  # pods and containers share one namespace
            state_dir=ctx.state_dir,
            host_port=ports.user,
            container_port=container.port,
        )
    pod_name = sandbox.name if sandbox is not None else None

    def sidecar(each: Container) -> Sidecar:
        log = logs / f"{each.name}.log"  # the serving container's is always user-container.log
        return Sidecar(lambda: _container_spec(ctx, pod, ports, each, log, pod_name), log)

    def user() -> ProcessSpec:
        if ctx.runtime is not None:
            return _container_spec(ctx, pod, ports, container, log_path, pod_name)
        return _process_user(ctx, ports, log_path, host)

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
        user_log=log_path,
        sidecars=tuple(sidecar(each) for each in ctx.template.sidecars) if sandbox is not None else (),
        sandbox=sandbox,
        cleanup=_releaser(ctx.volumes, pod),
        # The controller's own look at an unready app speaks HTTP/1.1: for an h2c app it only checks the port.
        readiness_path=None if container.protocol == H2C else readiness_http_path(container.readiness_probe),
        probe_token=ctx.probe_token,
    )
