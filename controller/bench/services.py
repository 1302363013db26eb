"""Knative Service documents for the benchmark apps, written as YAML files for `serving up` to run.

Commands use this interpreter and absolute paths, so the files work from any folder and with any virtualenv;
the same documents would run on a cluster once `image` points at a built image.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

REPO: Final = Path(__file__).resolve().parents[2]
SCENARIOS_DIR: Final = REPO / "benchmarks" / "scenarios"
APPS_DIR: Final = SCENARIOS_DIR / "apps"
BENCHAPP: Final = APPS_DIR / "benchapp.py"
HELLOWORLD_DIR: Final = REPO / "examples" / "helloworld-python"

AUTOSCALING: Final = "autoscaling.knative.dev/"
MIN_SCALE: Final = AUTOSCALING + "min-scale"
MAX_SCALE: Final = AUTOSCALING + "max-scale"
TARGET: Final = AUTOSCALING + "target"
TARGET_BURST_CAPACITY: Final = AUTOSCALING + "target-burst-capacity"
WINDOW: Final = AUTOSCALING + "window"


@dataclass(frozen=True, slots=True, kw_only=True)
class App:
    """What a container runs: a command, its folder, and an image name for clusters."""

    command: tuple[str, ...]
    working_dir: Path | None = None
    image: str = "docker.io/example/benchapp"
    env: Mapping[str, str] = field(default_factory=dict)


def benchapp(*, sleep_ms: float = 0, startup_ms: float = 0, version: str | None = None) -> App:
    env = {"SLEEP_MS": f"{sleep_ms:g}"}
    if startup_ms:
        env["STARTUP_MS"] = f"{startup_ms:g}"
    if version is not None:
        env["VERSION"] = version
    return App(command=(sys.executable, str(BENCHAPP)), env=env)


def helloworld() -> App:
    """The hello-world example (Flask under gunicorn, as in Knative's sample), as `serving up` runs it."""
    return App(
        command=(
            sys.executable,
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
        working_dir=HELLOWORLD_DIR,
        image="docker.io/example/helloworld-python",
        env={"TARGET": "Python Sample v1"},
    )


def service(
    name: str,
    app: App,
    *,
    namespace: str = "default",
    annotations: Mapping[str, str] | None = None,
    container_concurrency: int = 0,
) -> dict[str, Any]:
    """One `serving.knative.dev/v1` Service document."""
    container: dict[str, Any] = {
        "image": app.image,
        "command": list(app.command),
        "env": [{"name": k, "value": v} for k, v in app.env.items()],
    }
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
