"""The helm binary the Kubernetes fixtures build (tests/kube/build-control-plane.sh), run over charts/serving,
and what it renders as plain objects.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

ROOT: Final = Path(__file__).resolve().parents[2]
CHART: Final = ROOT / "charts" / "serving"
BUILD_SCRIPT: Final = ROOT / "tests" / "kube" / "build-control-plane.sh"
CUSTOM_VALUES: Final = Path(__file__).with_name("values-custom.yaml")
NO_EVENTING_VALUES: Final = Path(__file__).with_name("values-no-eventing.yaml")
RELEASE: Final = "serving"
NAMESPACE: Final = "serving-system"
BUILD_TIMEOUT: Final = 100.0
"""Seconds the build script may take: at once when helm is cached; a first build takes many minutes (Go builds
of the control plane), longer than a test may, so it is left to the developer to run once."""

Obj = dict[str, Any]


class HelmUnavailable(RuntimeError):
    """The build script could not provide helm; the message says why and what to do."""


BIN_ENV: Final = "SERVING_KUBE_BIN"
"""A directory holding prebuilt binaries (as for tests/kube); when set, the build script is not run."""


def build_helm() -> Path:
    """The helm binary from tests/kube/build-control-plane.sh (its last output line is the bin directory), or
    from `$SERVING_KUBE_BIN`."""
    if os.environ.get(BIN_ENV):
        helm = Path(os.environ[BIN_ENV]) / "helm"
        if not os.access(helm, os.X_OK):
            raise HelmUnavailable(f"{BIN_ENV}={os.environ[BIN_ENV]} holds no executable helm")
        return helm
    try:
        process = subprocess.Popen(
            ["bash", str(BUILD_SCRIPT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # so that a timeout ends the script's go builds too
        )
    except OSError as exc:
        raise HelmUnavailable(f"cannot run {BUILD_SCRIPT}: {exc}") from exc
    try:
        out, err = process.communicate(timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate()
        raise HelmUnavailable(
            f"{BUILD_SCRIPT.relative_to(ROOT)} did not finish in {BUILD_TIMEOUT:g}s: helm is not built yet. "
            "Run it once by hand (it builds the control plane and helm from the Go module proxy, several "
            "minutes), then run these tests again."
        ) from None
    lines = out.strip().splitlines()
    if process.returncode != 0 or not lines:
        tail = "\n".join(err.strip().splitlines()[-20:])
        raise HelmUnavailable(
            f"{BUILD_SCRIPT.relative_to(ROOT)} failed (exit {process.returncode}); last lines:\n{tail}"
        )
    helm = Path(lines[-1]) / "helm"
    if not os.access(helm, os.X_OK):
        raise HelmUnavailable(f"{BUILD_SCRIPT.relative_to(ROOT)} printed {lines[-1]} but {helm} is missing")
    return helm


@dataclass(frozen=True, slots=True)
class Values:
    """One way of setting the chart's values: values files, then `--set-string` pairs."""

    files: tuple[Path, ...] = ()
    strings: tuple[tuple[str, str], ...] = ()

    def args(self) -> list[str]:
        found: list[str] = []
        for path in self.files:
            found += ["--values", str(path)]
        for key, value in self.strings:
            found += ["--set-string", f"{key}={value}"]
        return found


DEFAULT: Final = Values()
CUSTOM: Final = Values(files=(CUSTOM_VALUES,))
NO_EVENTING: Final = Values(files=(NO_EVENTING_VALUES,))


@dataclass(frozen=True, slots=True)
class Helm:
    path: Path
    home: Path
    """A private home: no user repositories, plugins or registry logins change what helm does."""

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        home = self.home
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": os.devnull,
        }
        return subprocess.run(
            [str(self.path), *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )

    def lint(self, values: Values = DEFAULT, *, strict: bool = False) -> subprocess.CompletedProcess[str]:
        return self.run("lint", str(CHART), *(["--strict"] if strict else []), *values.args())

    def template(self, values: Values = DEFAULT, *, crds: bool = False) -> subprocess.CompletedProcess[str]:
        return self.run(
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            *(["--include-crds"] if crds else []),
            *values.args(),
        )

    def render(self, values: Values = DEFAULT, *, crds: bool = False) -> list[Obj]:
        """Every object `helm template` renders; fails with helm's message if it cannot."""
        result = self.template(values, crds=crds)
        if result.returncode != 0:
            raise AssertionError(f"helm template failed (exit {result.returncode}):\n{result.stderr}")
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(objects: Iterable[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: Iterable[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


WORKLOADS: Final = ("Deployment", "StatefulSet")
"""The kinds a component runs as: a Deployment, or a StatefulSet for the one with a volume (eventing)."""


def pod_specs(objects: Iterable[Obj]) -> Iterator[tuple[str, Obj]]:
    """`(Kind/name, pod spec)` of every Deployment, StatefulSet and bare Pod."""
    for obj in objects:
        if obj["kind"] in WORKLOADS:
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            yield f"Pod/{obj['metadata']['name']}", obj["spec"]


def workload(objects: Iterable[Obj], name: str) -> Obj:
    """A component's Deployment or StatefulSet (exactly one of them)."""
    found = [o for o in objects if o["kind"] in WORKLOADS and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one Deployment or StatefulSet {name!r}, found {len(found)}"
    return found[0]


def container(objects: Iterable[Obj], name: str) -> Obj:
    """The one container of a component's Deployment or StatefulSet."""
    containers = workload(objects, name)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{name} has {len(containers)} containers"
    first: Obj = containers[0]
    return first


POD_NAME: Final = "component-7d9f8c6b5-x2x4z"
POD_IP: Final = "10.244.1.17"
DOWNWARD: Final = {"metadata.name": POD_NAME, "status.podIP": POD_IP}
"""The downward-API fields the chart reads, as the kubelet would fill them in for one pod."""


def env_of(c: Mapping[str, Any]) -> dict[str, str]:
    """A container's environment as its process sees it, downward-API values filled in from DOWNWARD."""
    env: dict[str, str] = {}
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var["valueFrom"]:
            # The Secret's value is generated at install; its references are checked against the rendered
            # Secret by test_secret_references_name_a_rendered_secret_and_key.
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = f"secret-{ref['name']}-{ref['key']}"
        else:
            field = var["valueFrom"]["fieldRef"]["fieldPath"]
            assert field in DOWNWARD, f"{var['name']}: unexpected downward-API field {field}"
            env[var["name"]] = DOWNWARD[field]
    return env


def port_named(c: Mapping[str, Any], name: str) -> int:
    ports: Sequence[Mapping[str, Any]] = c.get("ports", [])
    for port in ports:
        if port["name"] == name:
            number: int = port["containerPort"]
            return number
    raise AssertionError(f"container {c['name']} has no port named {name!r}")


CASES: Final = {"default": DEFAULT, "custom": CUSTOM, "no-eventing": NO_EVENTING}
"""The values every rendering test runs with: the chart's defaults, tests/chart/values-custom.yaml and
tests/chart/values-no-eventing.yaml."""


class Renders:
    """`helm template` output per values case, CRDs included, computed on first use."""

    def __init__(self, helm: Helm) -> None:
        self._helm = helm
        self._cache: dict[str, list[Obj]] = {}

    def __call__(self, case: str) -> list[Obj]:
        if case not in self._cache:
            self._cache[case] = self._helm.render(CASES[case], crds=True)
        return self._cache[case]


def merged(base: Obj, override: Obj) -> Obj:
    """Helm's coalescing of a values file over the chart's values: maps merge, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def values_of(case: str) -> Obj:
    """The values a case renders with, as helm coalesces them."""
    values: Obj = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in CASES[case].files:
        values = merged(values, yaml.safe_load(path.read_text()))
    return values
