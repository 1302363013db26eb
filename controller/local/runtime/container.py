"""Container runtimes (podman, docker) for local pods whose user container is an image.

A container pod's user "process" is the runtime's client in the foreground (`podman run --rm --init ...`):
its exit is the container's, SIGTERM sent to it reaches the app through the client's signal proxy and
`--init`, and its output goes to the container's log like a process's. Killing the client does not stop the
container, so every container is removed by name once its client has ended (and before a restart reuses the
name), and containers that outlived a `serving up` killed outright are swept by label at the next start.

A runtime is chosen by really running a container (`run ... /no-such-file` in an empty image: exit 127
means a container was created and started, so the runtime works), not by `info`, which succeeds on hosts
whose OCI runtime cannot start anything. Explicit ulimits keep the OCI runtime within the host's hard limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import math
import os
import shutil
import signal
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from controller.local.runtime.process import Launcher, Process, ProcessSpec
from controller.local.runtime.ulimit import ulimit_args
from serving.events import ContainerSource, EventObject, local_event_problems
from serving.service import Service, local_problems

log = logging.getLogger(__name__)

PODMAN: Final = "podman"
DOCKER: Final = "docker"
PROCESS: Final = "process"
AUTO: Final = "auto"
CHOICES: Final = (AUTO, PODMAN, DOCKER, PROCESS)
"""`serving up --runtime`: auto (a runtime for image-only containers, if one works), one by name, or none."""
CHECK_IMAGE: Final = "localhost/serving-runtime-check:1"
"""An empty image (imported from an empty tar, no registry needed) that the runtime check starts."""
_CHECK_EXIT: Final = 127
"""`run` of a missing executable: the container was created and the OCI runtime tried to exec."""
STATE_LABEL: Final = "dev.serving.local.state"
"""Label naming the state folder of the `serving up` that started a container (for the sweep)."""
COMMAND_TIMEOUT: Final = 60.0
"""Seconds a runtime command other than a pull may take (a cold runtime's first command takes seconds)."""
IMAGE_SEEN_FOR: Final = 30.0
"""Seconds an image found present is taken to still be there (one removed meanwhile fails its `run`, whose
restart checks again)."""
PULL_TIMEOUT: Final = 600.0
"""Seconds an image pull may take."""
INSTALL_HINT: Final = "install podman (Debian/Ubuntu: apt-get install podman) or docker"


class RuntimeUnavailable(RuntimeError):
    """No container runtime works here; the message says what was tried and what to install."""


class ImageUnavailable(OSError):
    """An image is not present and cannot be pulled (or pulling is not allowed)."""


@dataclass(frozen=True, slots=True)
class ContainerRuntime:
    """A container runtime's client and the flags every command gets."""

    name: str
    """`podman` or `docker`."""
    binary: str
    global_args: tuple[str, ...] = ()
    """Flags before the command (podman `--runtime runc` where its default OCI runtime fails)."""
    ulimits: tuple[str, ...] = ()
    """`--ulimit` flags for `run`/`build` within this host's hard limits."""

    def cli(self, *args: str) -> tuple[str, ...]:
        return (self.binary, *self.global_args, *args)

    def describe(self) -> str:
        return " ".join((self.name, *self.global_args))

    def force_remove(self) -> tuple[str, ...]:
        """`rm` that kills at once: podman's needs `--time 0` (else it waits 10 s), docker has no `--time`."""
        return ("rm", "--force", "--time", "0") if self.name == PODMAN else ("rm", "--force")


@dataclass(frozen=True, slots=True)
class _Result:
    code: int
    out: str
    err: str

    def reason(self) -> str:
        """The last line the command wrote to stderr (runtimes say what went wrong there)."""
        lines = [line.strip() for line in self.err.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit code {self.code}"


async def _run(
    argv: Sequence[str], limit: float, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> _Result:
    """Run a runtime command to completion; a timeout or a missing binary is a failed result, not an error.

    Output goes to temporary files, and the command is done when it exits: a container's monitor (conmon)
    that the command leaves running inherits its output descriptors, so waiting for pipes to close would
    wait for the container."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
            )
        except OSError as exc:
            return _Result(-1, "", str(exc))
        try:
            if stdin is not None:
                assert proc.stdin is not None
                proc.stdin.write(stdin)
                await proc.stdin.drain()
                proc.stdin.close()
            code = await asyncio.wait_for(proc.wait(), limit)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return _Result(-1, "", f"{argv[0]} did not answer within {limit:g}s")
        except asyncio.CancelledError:  # a pod stopped while it pulled: the pull stops too
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
            raise
        out.seek(0)
        err.seek(0)
        return _Result(code, out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def _empty_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w"):
        pass
    return buffer.getvalue()


async def image_present(runtime: ContainerRuntime, image: str) -> bool:
    verb = ("image", "exists", image) if runtime.name == PODMAN else ("image", "inspect", image)
    result = await _run(runtime.cli(*verb), COMMAND_TIMEOUT)
    return result.code == 0


async def _check(runtime: ContainerRuntime) -> str | None:
    """None when `runtime` starts a container; else why not."""
    if not await image_present(runtime, CHECK_IMAGE):
        imported = await _run(runtime.cli("import", "-", CHECK_IMAGE), COMMAND_TIMEOUT, stdin=_empty_tar())
        if imported.code != 0:
            return imported.reason()
    result = await _run(
        runtime.cli("run", "--rm", *runtime.ulimits, CHECK_IMAGE, "/serving-runtime-check"), COMMAND_TIMEOUT
    )
    return None if result.code == _CHECK_EXIT else result.reason()


def _candidates(name: str) -> list[ContainerRuntime]:
    binary = shutil.which(name)
    if binary is None:
        return []
    ulimits = ulimit_args()
    found = [ContainerRuntime(name, binary, (), ulimits)]
    # Podman picks crun when it is installed; where crun cannot run containers (hybrid cgroups), runc can.
    if name == PODMAN and shutil.which("runc"):
        found.append(ContainerRuntime(name, binary, ("--runtime", "runc"), ulimits))
    return found


async def detect(choice: str = AUTO) -> ContainerRuntime:
    """The first runtime that really starts a container: `choice` is podman, docker or auto (podman first).

    Raises `RuntimeUnavailable` naming every attempt and why it failed."""
    names = (PODMAN, DOCKER) if choice == AUTO else (choice,)
    tried: list[str] = []
    for name in names:
        candidates = _candidates(name)
        if not candidates:
            tried.append(f"{name}: not installed")
        for runtime in candidates:
            problem = await _check(runtime)
            if problem is None:
                log.info("container runtime: %s", runtime.describe())
                return runtime
            tried.append(f"{runtime.describe()}: cannot start a container: {problem}")
    raise RuntimeUnavailable(f"no container runtime works here ({'; '.join(tried)}); {INSTALL_HINT}")


def runs_as_container(choice: str, image: str | None, command: Sequence[str]) -> bool:
    """Whether a user container runs from its image: always with an image under `--runtime podman|docker`,
    never under `process`, and under `auto` when it has no `command` to run as a process instead."""
    if image is None or choice == PROCESS:
        return False
    return not command if choice == AUTO else True


def needing_runtime(services: Sequence[Service], choice: str) -> list[Service]:
    """The Services whose user container runs from its image under `choice`."""
    return [
        s
        for s in services
        if runs_as_container(choice, s.template.container.image, s.template.container.command)
    ]


def source_runs_as_container(source: ContainerSource, choice: str) -> bool:
    return runs_as_container(choice, source.container.image, source.container.command)


def sources_needing_runtime(objects: Sequence[EventObject], choice: str) -> list[ContainerSource]:
    """The ContainerSources whose container runs from its image under `choice`."""
    return [o for o in objects if isinstance(o, ContainerSource) and source_runs_as_container(o, choice)]


def local_service_problems(service: Service, runtime_choice: str) -> list[str]:
    """What `serving up` cannot run in `service`, given what runs as a container under `runtime_choice`."""
    container = service.template.container
    return local_problems(
        service, container=runs_as_container(runtime_choice, container.image, container.command)
    )


def local_event_object_problems(obj: EventObject, runtime_choice: str) -> list[str]:
    """What `serving up` cannot run in an Eventing object, given whether a ContainerSource's container runs
    from its image under `runtime_choice` (as a Service's does) or as a process (it needs a `command`)."""
    container = isinstance(obj, ContainerSource) and source_runs_as_container(obj, runtime_choice)
    return local_event_problems(obj, container=container)


def pod_problems(services: Sequence[Service], runtime: ContainerRuntime) -> list[str]:
    """Services `runtime` cannot run: several containers need pods, which docker does not have."""
    if runtime.name == PODMAN:
        return []
    return [
        f"{s.where}: spec.template.spec.containers: several containers need podman (pods), not {runtime.name}"
        for s in services
        if s.template.sidecars
    ]


def runtime_problem(obj: Service | ContainerSource, why: RuntimeUnavailable) -> str:
    container = obj.container if isinstance(obj, ContainerSource) else obj.template.container
    where = f"spec.template.spec.containers[{container.index}].image"
    return f"{obj.where}: {where}: runs as a container (no `command` to run as a process), but {why}"


def owner_label(state_dir: Path) -> str:
    """`KEY=VALUE` of the label on every container a `serving up` of `state_dir` starts."""
    return f"{STATE_LABEL}={state_dir.resolve()}"


def owner_hash(state_dir: Path) -> str:
    """Six hex digits naming a state folder in container names, so two `serving up`s never clash."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:6]


def container_name(state_dir: Path, pod: str) -> str:
    return f"serving-{owner_hash(state_dir)}-{pod}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerRun:
    """How to run one container: what the runtime's `run` gets, and what to do about its image."""

    runtime: ContainerRuntime
    name: str
    image: str
    pull_policy: str = "IfNotPresent"
    """`Always` pulls before each start (a failed pull of a present image only warns), `Never` never pulls,
    `IfNotPresent` pulls a missing image."""
    state_dir: Path
    host_port: int
    """The loopback port the container port is published on (the queue-proxy's user port); 0 with
    `host_network`."""
    container_port: int
    env_names: tuple[str, ...] = ()
    """Variables passed by name: their values travel in the client's environment, never on a command line."""
    explicit_env: tuple[tuple[str, str], ...] = ()
    """Variables passed with their values on the command line (only for values that are no secret)."""
    env_file: Path | None = None
    """A 0600 file of `NAME=VALUE` lines: variables whose names the client itself reads (PATH, HOME,
    proxies...), which therefore cannot travel in its environment."""
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str | None = None
    cpus: str | None = None
    memory: int | None = None
    labels: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    mounts: tuple[str, ...] = ()
    """`--volume`/`--mount` flags of the pod's volumes (`controller.local.runtime.volume`)."""
    pod: str | None = None
    """The podman pod whose network namespace it joins (a multi-container pod); its ports are the pod's."""
    host_network: bool = False
    """The container shares the host's network (a ContainerSource: it serves nothing, and reaches the
    platform's addresses on loopback as a source run as a process does); nothing is published."""

    def argv(self) -> tuple[str, ...]:
        """The client's command line: `podman run --rm --init ... IMAGE [ARGS]` (Kubernetes' command and
        args: `command` replaces the image's entrypoint and drops its CMD, `args` replaces CMD)."""
        out = [
            "run",
            "--rm",
            "--init",
            "--name",
            self.name,
            "--label",
            owner_label(self.state_dir),
            "--pull",
            "never",
            *(
                ("--pod", self.pod)
                if self.pod
                else ("--network", "host")
                if self.host_network
                else ("--publish", f"127.0.0.1:{self.host_port}:{self.container_port}")
            ),
            *self.runtime.ulimits,
        ]
        for key, value in self.labels:
            out += ["--label", f"{key}={value}"]
        for name in self.env_names:
            out += ["--env", name]
        for name, value in self.explicit_env:
            out += ["--env", f"{name}={value}"]
        if self.env_file is not None:
            out += ["--env-file", str(self.env_file)]
        if self.working_dir:
            out += ["--workdir", self.working_dir]
        if self.cpus is not None:
            out += ["--cpus", self.cpus]
        if self.memory is not None:
            out += ["--memory", str(self.memory)]
        out += self.mounts
        rest = list(self.args)
        if self.command:
            out += ["--entrypoint", self.command[0]]
            rest = [*self.command[1:], *self.args]
        return self.runtime.cli(*out, self.image, *rest)


class _Images:
    """Makes sure an image is present before a container of it starts; one pull per image at a time."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._seen: dict[str, float] = {}
        """Image -> monotonic time it was last found present: a wake-up of many pods of one image checks
        once, not once per pod in turn behind the lock."""

    async def ensure(self, run: ContainerRun, note: ProcessSpec) -> None:
        seen = self._seen.get(run.image, -math.inf)
        if run.pull_policy != "Always" and time.monotonic() - seen < IMAGE_SEEN_FOR:
            return
        lock = self._locks.setdefault(run.image, asyncio.Lock())
        async with lock:
            present = await image_present(run.runtime, run.image)
            if present and run.pull_policy != "Always":
                self._seen[run.image] = time.monotonic()
                return
            if not present and run.pull_policy == "Never":
                raise ImageUnavailable(
                    f"image {run.image} is not present and imagePullPolicy is Never: build or load it first "
                    f"({run.runtime.name} build -t {run.image} ., or {run.runtime.name} load -i FILE)"
                )
            _append(note, f"serving: pulling image {run.image}\n")
            result = await _run(run.runtime.cli("pull", run.image), PULL_TIMEOUT)
            if result.code == 0:
                _append(note, f"serving: pulled image {run.image}\n")
                return
            if present:
                _append(
                    note, f"serving: pull of {run.image} failed ({result.reason()}); using the local image\n"
                )
                return
            raise ImageUnavailable(
                f"image {run.image} is not present and cannot be pulled: {result.reason()} (build or load it "
                f"with {run.runtime.name} build -t {run.image} . or {run.runtime.name} load -i FILE)"
            )


class ContainerProcess:
    """The runtime client of a running container; waiting for it also removes the container."""

    def __init__(self, client: Process, run: ContainerRun, leftovers: set[str]) -> None:
        self._client = client
        self._run = run
        self._leftovers = leftovers
        self._removed: asyncio.Task[None] | None = None

    async def _remove(self) -> None:
        if not await remove(self._run.runtime, self._run.name):
            self._leftovers.add(self._run.name)

    @property
    def pid(self) -> int:
        return self._client.pid

    @property
    def returncode(self) -> int | None:
        return self._client.returncode

    async def wait(self) -> int:
        code = await self._client.wait()
        if self._removed is None:
            self._removed = asyncio.ensure_future(self._remove())
        await asyncio.shield(self._removed)
        return code

    def signal(self, sig: int) -> None:
        """SIGTERM reaches the app through the client's signal proxy; SIGKILL ends the client, after which
        `wait` removes (kills) the container."""
        self._client.signal(sig)
        if sig == signal.SIGKILL and self._removed is None:
            self._removed = asyncio.ensure_future(self._remove())


async def remove(runtime: ContainerRuntime, name: str) -> bool:
    """Kill and remove a container by name; False when it may still be there (a container that is not there
    is not an error)."""
    result = await _run(runtime.cli(*runtime.force_remove(), name), COMMAND_TIMEOUT)
    if result.code != 0 and "no such container" not in result.err.lower():
        log.warning("could not remove container %s: %s", name, result.reason())
        return False
    return True


async def sweep(runtime: ContainerRuntime, state_dir: Path) -> int:
    """Remove every container (and podman pod) a `serving up` of `state_dir` left behind; returns how many
    containers there were."""
    owner = f"label={owner_label(state_dir)}"
    listed = await _run(runtime.cli("ps", "--all", "--quiet", "--filter", owner), COMMAND_TIMEOUT)
    ids = listed.out.split() if listed.code == 0 else []
    if ids:
        removed = await _run(runtime.cli(*runtime.force_remove(), *ids), COMMAND_TIMEOUT)
        if removed.code != 0:
            log.warning("could not remove containers left behind: %s", removed.reason())
            return 0
    if runtime.name == PODMAN:
        pods = await _run(runtime.cli("pod", "ps", "--quiet", "--filter", owner), COMMAND_TIMEOUT)
        if pods.code == 0 and pods.out.split():
            await _run(runtime.cli("pod", "rm", "--force", *pods.out.split()), COMMAND_TIMEOUT)
    return len(ids)


async def sweep_installed(state_dir: Path) -> int:
    """`sweep` with every runtime installed here (no check that it can start containers: listing and removing
    need none), for a `serving up` that needs no runtime itself but may follow one that did."""
    gone = 0
    for name in (PODMAN, DOCKER):
        binary = shutil.which(name)
        if binary is not None:
            gone += await sweep(ContainerRuntime(name, binary), state_dir)
    return gone


@dataclass(frozen=True, slots=True, kw_only=True)
class PodSandbox:
    """The podman pod of a multi-container pod: one network namespace (its infra container holds it) that
    every container joins with `--pod`, the serving port published on loopback."""

    runtime: ContainerRuntime
    name: str
    state_dir: Path
    host_port: int
    container_port: int

    def _env(self) -> dict[str, str]:
        """The client's environment, with a containers.conf giving the infra container the ulimits every
        container gets (`pod create` has no --ulimit flag)."""
        conf = self.state_dir / "containers.conf"
        temporary = conf.with_name(f".{conf.name}.{os.getpid()}.{id(self)}")
        limits = [
            v
            for flag, v in zip(self.runtime.ulimits[::2], self.runtime.ulimits[1::2], strict=True)
            if flag == "--ulimit"
        ]
        temporary.write_text(
            "[containers]\ndefault_ulimits = [" + ", ".join(f'"{v}"' for v in limits) + "]\n"
        )
        temporary.replace(conf)  # atomic: a concurrent `pod create` never reads half a file
        return {**os.environ, "CONTAINERS_CONF": str(conf)}

    async def create(self) -> None:
        """Make (or remake) the pod and start its infra container; raises OSError saying why not."""
        if self.runtime.name != PODMAN:
            raise OSError(f"a pod of several containers needs podman (pods), not {self.runtime.name}")
        await self.remove()
        env = self._env()
        created = await _run(
            self.runtime.cli(
                "pod",
                "create",
                "--name",
                self.name,
                "--label",
                owner_label(self.state_dir),
                "--publish",
                f"127.0.0.1:{self.host_port}:{self.container_port}",
            ),
            COMMAND_TIMEOUT,
            env=env,
        )
        started = (
            created
            if created.code != 0
            else await _run(self.runtime.cli("pod", "start", self.name), COMMAND_TIMEOUT, env=env)
        )
        if started.code != 0:
            raise OSError(f"podman pod {self.name} could not start: {started.reason()}")

    async def remove(self) -> None:
        await _run(self.runtime.cli("pod", "rm", "--force", self.name), COMMAND_TIMEOUT)


class ContainerLauncher:
    """A `Launcher` that starts container specs (`ProcessSpec.container`) through their runtime, after
    making sure the image is there and no container of the same name is left, and other specs as before."""

    def __init__(self, inner: Launcher) -> None:
        self._inner = inner
        self._images = _Images()
        self._leftovers: set[str] = set()
        """Containers whose removal failed: removed again before a restart reuses the name."""

    async def start(self, spec: ProcessSpec) -> Process:
        run = spec.container
        if run is None:
            return await self._inner.start(spec)
        await self._images.ensure(run, spec)
        if run.name in self._leftovers and await remove(run.runtime, run.name):
            self._leftovers.discard(run.name)
        return ContainerProcess(await self._inner.start(spec), run, self._leftovers)


def _append(spec: ProcessSpec, text: str) -> None:
    """Note what the platform did in the container's log, where `serving logs` shows it."""
    with contextlib.suppress(OSError):
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_path.open("a") as out:
            out.write(text)
