"""Knative Service documents for the benchmark apps, written as YAML files for `serving up` to run; they name
no path of the machine that wrote them (`python`, the app as a module), and would run on a cluster once
`image` points at a built image. An app with no command runs from its image (`serving up` runs it as a
container)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

PYTHON: Final = "python"
BENCHAPP_MODULE: Final = "bench.apps.benchapp"

AUTOSCALING: Final = "autoscaling.knative.dev/"
MIN_SCALE: Final = AUTOSCALING + "min-scale"
MAX_SCALE: Final = AUTOSCALING + "max-scale"
TARGET: Final = AUTOSCALING + "target"
TARGET_BURST_CAPACITY: Final = AUTOSCALING + "target-burst-capacity"
WINDOW: Final = AUTOSCALING + "window"


@dataclass(frozen=True, slots=True, kw_only=True)
class App:
    """What a container runs: a command, its folder, and an image name for clusters; with no command, the
    image itself (its own entrypoint and CMD)."""

    command: tuple[str, ...]
    working_dir: Path | None = None
    image: str = "docker.io/example/benchapp"
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def from_image(self) -> bool:
        """Whether the app runs from its image: `serving up --runtime auto` runs it as a container."""
        return not self.command


def interpreter() -> str:
    """How Service files name this interpreter: `python` when its folder has a `python` that is this very
    interpreter (every virtualenv has one), else its absolute path (a bare `python` would find another)."""
    executable = Path(sys.executable)
    try:
        if executable.with_name(PYTHON).samefile(executable):
            return PYTHON
    except OSError:
        pass
    return str(executable)


def path_first(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with this interpreter's folder first on PATH, so that `python` (and the tools installed beside
    it, gunicorn) in a Service's command is the interpreter running the bench."""
    folder = str(Path(sys.executable).parent)
    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != folder]
    return {**env, "PATH": os.pathsep.join([folder, *rest])}


def benchapp(*, sleep_ms: float = 0, startup_ms: float = 0, version: str | None = None) -> App:
    env = {"SLEEP_MS": f"{sleep_ms:g}"}
    if startup_ms:
        env["STARTUP_MS"] = f"{startup_ms:g}"
    if version is not None:
        env["VERSION"] = version
    return App(command=(interpreter(), "-m", BENCHAPP_MODULE), env=env)


def helloworld(folder: Path) -> App:
    """The hello-world example (Flask under gunicorn, as in Knative's sample) in `folder` (a checkout's
    `examples/helloworld-python`), as `serving up` runs it."""
    return App(
        command=(
            interpreter(),
            "-m",
            "gunicorn",
            "--bind",
            "127.0.0.1:$(PORT)",
            "--workers",
            "1",
            "--threads",
            "8",
            "--timeout",
            "0",
            "app:app",
        ),
        working_dir=folder,
        image="docker.io/example/helloworld-python",
        env={"TARGET": "Python Sample v1"},
    )


def image_app(image: str) -> App:
    """The image `image` (present in the container runtime's local storage) as it is: no command, so its
    own entrypoint and CMD serve HTTP on $PORT."""
    return App(command=(), image=image)


def document(
    name: str,
    app: App,
    *,
    namespace: str = "default",
    annotations: Mapping[str, str] | None = None,
    container_concurrency: int = 0,
) -> dict[str, Any]:
    """One `serving.knative.dev/v1` Service document."""
    container: dict[str, Any] = {"image": app.image}
    if app.command:
        container["command"] = list(app.command)
    if app.env:
        container["env"] = [{"name": k, "value": v} for k, v in app.env.items()]
    if app.working_dir is not None:
        container["workingDir"] = str(app.working_dir)
    template: dict[str, Any] = {
        "spec": {"containerConcurrency": container_concurrency, "containers": [container]}
    }
    if annotations:
        template["metadata"] = {"annotations": dict(annotations)}
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": template},
    }


def write(path: Path, documents: Sequence[Mapping[str, Any]], comment: str = "") -> Path:
    """Write documents as one multi-document YAML file (atomically: `serving up` may be watching it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    text = header + yaml.safe_dump_all([dict(d) for d in documents], sort_keys=False)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def host(name: str, namespace: str = "default") -> str:
    """The Host header the local ingress routes to a Service."""
    return f"{name}.{namespace}.localhost"
