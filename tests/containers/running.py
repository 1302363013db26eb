"""Test containers: a one-shot command's output, or a server on a published loopback port; either way the
container is removed afterwards (`RUNTIME rm -f`), also when the test fails."""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from tests.containers.images import ContainerError, is_podman, run_flags, runtime_argv

READY_TIMEOUT = 30.0
"""Seconds a served container gets to answer HTTP on its port."""


def _name() -> str:
    return f"serving-test-{uuid.uuid4().hex[:12]}"


def _env_args(env: Mapping[str, str] | None) -> list[str]:
    return [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]


def _remove(runtime: str, name: str) -> None:
    grace = ("-t", "0") if is_podman(runtime) else ()
    subprocess.run(
        [*runtime_argv(runtime), "rm", "-f", *grace, name], capture_output=True, timeout=60, check=False
    )


def run_once(
    image: str,
    *command: str,
    env: Mapping[str, str] | None = None,
    options: Sequence[str] = (),
    runtime: str = "podman",
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`RUNTIME run --init IMAGE COMMAND...` to its end: exit code, stdout and stderr (not checked)."""
    name = _name()
    argv = [*runtime_argv(runtime), "run", "--name", name, "--init", *run_flags(runtime)]
    argv += [*_env_args(env), *options, image, *command]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    finally:
        _remove(runtime, name)


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Loopback requests never go through a proxy set in the environment."""


def http_get(url: str, timeout: float = 10) -> tuple[int, str]:
    """Status and body of GET `url`; an HTTP error status is returned, not raised."""
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


@dataclass(frozen=True)
class Container:
    """A running container whose `port` is published on 127.0.0.1 at `host_port`."""

    name: str
    runtime: str
    host_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.host_port}"

    def get(self, path: str = "/", timeout: float = 10) -> tuple[int, str]:
        """Status and body of GET `path` (`/cgi-bin/env`)."""
        return http_get(self.url + path, timeout)

    def logs(self) -> str:
        done = subprocess.run(
            [*runtime_argv(self.runtime), "logs", self.name], capture_output=True, text=True, check=False
        )
        return done.stdout + done.stderr

    def state(self) -> str:
        """`running`, `exited`, ... (empty once removed)."""
        done = subprocess.run(
            [*runtime_argv(self.runtime), "inspect", "--format", "{{.State.Status}}", self.name],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip()

    def stop(self, timeout: float = 10) -> float:
        """`RUNTIME stop` (SIGTERM, SIGKILL after `timeout`); returns the seconds it took."""
        started = time.monotonic()
        subprocess.run(
            [*runtime_argv(self.runtime), "stop", "-t", str(int(timeout)), self.name],
            capture_output=True,
            timeout=timeout + 30,
            check=False,
        )
        return time.monotonic() - started


@contextlib.contextmanager
def served(
    image: str,
    *command: str,
    port: int = 8080,
    env: Mapping[str, str] | None = None,
    options: Sequence[str] = (),
    runtime: str = "podman",
) -> Iterator[Container]:
    """A detached `RUNTIME run --init` of `image` (with PORT=`port` unless `env` sets it) with `port`
    published on a free loopback port, yielded once it answers HTTP; removed at exit."""
    name = _name()
    env = {"PORT": str(port), **(env or {})}
    argv = [*runtime_argv(runtime), "run", "-d", "--name", name, "--init", *run_flags(runtime)]
    argv += [*_env_args(env), "-p", f"127.0.0.1::{port}", *options, image, *command]
    try:
        started = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if started.returncode != 0:
            raise ContainerError(f"{' '.join(argv)} exited with {started.returncode}:\n{started.stderr}")
        container = Container(name, runtime, _host_port(runtime, name, port))
        _wait_ready(container)
        yield container
    finally:
        _remove(runtime, name)


def _host_port(runtime: str, name: str, port: int) -> int:
    """The loopback port `port` is published on; ContainerError when the container has already ended."""
    published = subprocess.run(
        [*runtime_argv(runtime), "port", name, str(port)], capture_output=True, text=True, check=False
    ).stdout.split()
    if not published:
        logs = Container(name, runtime, 0)
        raise ContainerError(f"{name} ended at once ({logs.state() or 'gone'}):\n{logs.logs()}")
    return int(published[0].rsplit(":", 1)[1])


def _wait_ready(container: Container) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            container.get("/", timeout=2)
            return
        except OSError as exc:  # refused or reset while the server starts; a timeout is an OSError too
            state = container.state()
            if state not in ("running", "created", "configured", "initialized"):
                raise ContainerError(f"{container.name} is {state or 'gone'}:\n{container.logs()}") from exc
            if time.monotonic() > deadline:
                raise ContainerError(
                    f"{container.name} did not answer on {container.url} within {READY_TIMEOUT:.0f}s:\n"
                    f"{container.logs()}"
                ) from exc
        time.sleep(0.1)
