"""`serving up` with pods run from images by a real container runtime (podman): an image-only Service answers
through the ingress, scales to zero and back, and leaves no container behind; a missing image or runtime says
so clearly."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from controller.local.runtime.container import owner_label
from tests.containers.images import busybox_image
from tests.integration.conftest import ROOT, SERVING, ServingUp, eventually
from tests.integration.test_up_eventing import BROKER, received, sink_service, trigger

pytestmark = pytest.mark.containers

Start = Callable[..., Awaitable[ServingUp]]
FAST = ["--autoscaler-config", "scale-to-zero-grace-period=2s"]

SERVICE = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/window: 6s
    spec:
      containers:
        - image: {image}
          env:
            - name: GREETING
              value: hello from env
            - name: PASSWORD
              valueFrom:
                secretKeyRef:
                  name: credentials
                  key: password
          envFrom:
            - configMapRef:
                name: settings
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  COLOR: blue
---
apiVersion: v1
kind: Secret
metadata:
  name: credentials
stringData:
  password: {secret}
"""
SECRET = "container-secret-never-on-a-command-line"


def containers(state_dir: Path, runtime: str = "podman") -> list[str]:
    """Names of the containers (running or not) that a `serving up` of `state_dir` started."""
    out = subprocess.run(
        [runtime, "ps", "--all", "--format", "{{.Names}}", "--filter", f"label={owner_label(state_dir)}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return out.split()


def inspect(container: str, template: str, runtime: str = "podman") -> str:
    """`runtime inspect --format template` of one container."""
    return subprocess.run(
        [runtime, "inspect", "--format", template, container],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()


def command_lines() -> list[tuple[int, str]]:
    """(pid, command line) of every process."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                found.append((int(proc.name), (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
            except OSError:
                continue
    return found


def write_service(folder: Path, name: str, image: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(SERVICE.format(name=name, image=image, secret=SECRET))
    return path


async def test_image_only_service_runs_in_a_container_and_scales_to_zero_and_back(
    serving_up: Start, tmp_path: Path
) -> None:
    image = await asyncio.to_thread(busybox_image)
    up = await serving_up([write_service(tmp_path, "boxed", image)], FAST)
    await up.wait_revision(
        "boxed-00001", lambda r: r["ready_pods"] == 1, 60, "the container pod never got ready"
    )
    assert await up.get("boxed") == (200, "hello from busybox\n")
    status, env = await up.get("boxed", "/cgi-bin/env")
    assert status == 200
    # Knative's runtime contract inside the container: PORT is the container port, not the host's.
    expected = (
        "GREETING=hello from env",
        "PORT=8080",
        "K_SERVICE=boxed",
        "K_REVISION=boxed-00001",
        "COLOR=blue",
    )
    for line in (*expected, f"PASSWORD={SECRET}"):
        assert line in env.splitlines(), env
    # Values reach the container through the runtime client's environment, never its command line.
    assert [cmd for _, cmd in command_lines() if SECRET in cmd] == []
    assert len(containers(up.state_dir)) == 1

    await up.wait_revision("boxed-00001", lambda r: r["actual_pods"] == 0, 60, "did not scale to zero")
    await eventually(
        lambda: asyncio.to_thread(lambda: containers(up.state_dir) == []), 15, "container left after scale-in"
    )
    # The first request at zero waits in the activator while a new container starts.
    assert await up.get("boxed", timeout=None) == (200, "hello from busybox\n")

    assert await up.stop() == 0
    assert containers(up.state_dir) == []


async def test_missing_image_is_named_in_the_pod_status_and_log(serving_up: Start, tmp_path: Path) -> None:
    await asyncio.to_thread(busybox_image)  # the runtime works; only this image is missing
    missing = "localhost/serving-test-missing:1"
    up = await serving_up([write_service(tmp_path, "ghost", missing)])

    async def explained() -> bool:
        rev = await up.revision("ghost-00001")
        return rev is not None and any(missing in str(pod.get("reason")) for pod in rev.get("pods", []))

    await eventually(
        explained, 60, f"no pod reason names the missing image: {await up.revision('ghost-00001')}"
    )
    logs = list(up.state_dir.glob("logs/default/ghost/*/user-container.log"))
    assert logs
    assert f"image {missing} is not present and cannot be pulled" in logs[0].read_text()
    assert await up.stop() == 0


DAEMONLESS_DOCKER = """#!/bin/sh
echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2
exit 1
"""


@pytest.mark.parametrize(
    "installed", [pytest.param(False, id="not-installed"), pytest.param(True, id="no-daemon")]
)
def test_an_unworking_runtime_stops_serving_up_with_the_file_and_what_to_install(
    tmp_path: Path, installed: bool
) -> None:
    """Only what is on PATH counts: none of podman and docker, or a docker client whose daemon is not running
    (a script that answers as that client does)."""
    tools = tmp_path / "bin"
    tools.mkdir()
    if installed:
        (tools / "docker").write_text(DAEMONLESS_DOCKER)
        (tools / "docker").chmod(0o755)
    path = write_service(tmp_path, "boxed", "localhost/anything:1")
    result = subprocess.run(
        [*SERVING, "up", str(path), "--port", "0", "--no-live"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(tools), "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
        executable=sys.executable,
    )
    assert result.returncode == 2
    assert f"{path}: document 1 (Service/boxed): spec.template.spec.containers[0].image" in result.stderr
    assert "podman: not installed" in result.stderr
    expected = (
        "docker: cannot start a container: Cannot connect to the Docker daemon"
        if installed
        else "docker: not installed"
    )
    assert expected in result.stderr
    assert "install podman" in result.stderr


VOLUMES = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: mounted
spec:
  template:
    spec:
      containers:
        - image: {image}
          volumeMounts:
            - name: settings
              mountPath: /etc/config
              readOnly: true
            - name: credentials
              mountPath: /etc/secret
              readOnly: true
      volumes:
        - name: settings
          configMap:
            name: settings
        - name: credentials
          secret:
            secretName: credentials
            items:
              - key: password
                path: db/password
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: {greeting}
---
apiVersion: v1
kind: Secret
metadata:
  name: credentials
stringData:
  password: mounted-secret
"""


async def test_mounted_config_map_is_updated_in_place(serving_up: Start, tmp_path: Path) -> None:
    image = await asyncio.to_thread(busybox_image)
    path = tmp_path / "mounted.yaml"
    path.write_text(VOLUMES.format(image=image, greeting="hello"))
    up = await serving_up([path])
    await up.wait_revision(
        "mounted-00001", lambda r: r["ready_pods"] == 1, 60, "the container pod never got ready"
    )
    assert await up.get("mounted", "/cgi-bin/file?/etc/config/greeting") == (200, "hello")
    assert await up.get("mounted", "/cgi-bin/file?/etc/secret/db/password") == (200, "mounted-secret")
    [pod] = (await up.revision("mounted-00001") or {})["pods"]

    path.write_text(VOLUMES.format(image=image, greeting="changed"))

    async def updated() -> bool:
        return await up.get("mounted", "/cgi-bin/file?/etc/config/greeting") == (200, "changed")

    await eventually(updated, 20, "the mounted ConfigMap was not updated in the running container")
    rev = await up.revision("mounted-00001")
    assert rev is not None
    assert [p["name"] for p in rev["pods"]] == [pod["name"]]  # the same pod: no restart, no new revision
    assert "volume " in up.output()
    assert await up.stop() == 0
    assert not (up.state_dir / "volumes" / pod["name"]).exists()


SIDECAR = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: paired
spec:
  template:
    spec:
      containers:
        - name: app
          image: {image}
          ports:
            - containerPort: 8080
        - name: helper
          image: {image}
          command: ["httpd", "-f", "-p", "127.0.0.1:9000", "-h", "/www"]
          env:
            - name: ROLE
              value: sidecar
"""


async def test_a_sidecar_shares_the_serving_containers_localhost(serving_up: Start, tmp_path: Path) -> None:
    image = await asyncio.to_thread(busybox_image)
    path = tmp_path / "paired.yaml"
    path.write_text(SIDECAR.format(image=image))
    up = await serving_up([path])
    await up.wait_revision(
        "paired-00001", lambda r: r["ready_pods"] == 1, 60, "the two-container pod never got ready"
    )
    assert await up.get("paired") == (200, "hello from busybox\n")
    names = [
        n for n in containers(up.state_dir) if not n.endswith("-infra")
    ]  # the pod's own holds its network
    assert len(names) == 2
    [serving] = [n for n in names if not n.endswith("-helper")]

    def from_the_serving_container() -> str:
        return subprocess.run(
            ["podman", "exec", serving, "wget", "-qO-", "http://127.0.0.1:9000/cgi-bin/env"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout

    env = (await asyncio.to_thread(from_the_serving_container)).splitlines()
    assert "ROLE=sidecar" in env
    assert "K_SERVICE=paired" in env
    assert not any(line.startswith("PORT=") for line in env)  # PORT is the serving container's only
    assert await up.stop() == 0
    assert containers(up.state_dir) == []
    pods = await asyncio.to_thread(
        lambda: (
            subprocess.run(
                ["podman", "pod", "ps", "--quiet", "--filter", f"label={owner_label(up.state_dir)}"],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
        )
    )
    assert pods.strip() == ""


async def test_docker_runs_an_image_only_service_and_removes_its_containers(
    serving_up: Start, tmp_path: Path
) -> None:
    image = await asyncio.to_thread(busybox_image, "docker")
    up = await serving_up([write_service(tmp_path, "docked", image)], [*FAST, "--runtime", "docker"])
    await up.wait_revision(
        "docked-00001", lambda r: r["ready_pods"] == 1, 60, "the docker pod never got ready"
    )
    assert await up.get("docked") == (200, "hello from busybox\n")
    env = (await up.get("docked", "/cgi-bin/env"))[1].splitlines()
    for line in ("GREETING=hello from env", "PORT=8080", "COLOR=blue", f"PASSWORD={SECRET}"):
        assert line in env
    assert len(await asyncio.to_thread(containers, up.state_dir, "docker")) == 1
    await up.wait_revision("docked-00001", lambda r: r["actual_pods"] == 0, 60, "did not scale to zero")
    await eventually(
        lambda: asyncio.to_thread(lambda: containers(up.state_dir, "docker") == []),
        15,
        "container left after scale-in",
    )
    assert await up.get("docked", timeout=None) == (200, "hello from busybox\n")
    assert await up.stop() == 0
    assert await asyncio.to_thread(containers, up.state_dir, "docker") == []


HEARTBEAT_LOOP = (
    "i=0; while true; do i=`expr $i + 1`; "
    "wget -q -O /dev/null --header 'ce-specversion: 1.0' --header \"ce-id: boxed-beat-$i\" "
    "--header 'ce-source: /busybox' --header \"ce-type: `cat /etc/beats/type`\" "
    "--header 'Content-Type: application/json' "
    '--post-data "$K_CE_OVERRIDES" "$K_SINK"; sleep 1; done'
)


async def test_an_image_only_container_source_posts_from_its_container(
    serving_up: Start, tmp_path: Path
) -> None:
    """Knative's ContainerSource YAML with an image and no command runs from its image: in a container on the
    host's network, with K_SINK (the Broker on loopback) and K_CE_OVERRIDES, its ConfigMap volume mounted
    (the event type it sends is read from it: the Trigger's filter passes only that), its resource limits
    applied, removed when `serving up` stops."""
    image = await asyncio.to_thread(busybox_image)
    yaml = tmp_path / "eventing.yaml"
    yaml.write_text(
        sink_service(tmp_path)
        + BROKER
        + trigger("beats", "/beats", filters="\n  filter:\n    attributes:\n      type: heartbeat")
        + f"""\
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: beats-settings
data:
  type: heartbeat
---
apiVersion: sources.knative.dev/v1
kind: ContainerSource
metadata:
  name: boxed-beats
spec:
  template:
    spec:
      containers:
        - image: {image}
          args: ["/bin/sh", "-c", {json.dumps(HEARTBEAT_LOOP)}]
          resources:
            limits:
              cpu: 250m
              memory: 64Mi
          volumeMounts:
            - name: settings
              mountPath: /etc/beats
              readOnly: true
      volumes:
        - name: settings
          configMap:
            name: beats-settings
  ceOverrides:
    extensions:
      team: blue
  sink:
    ref:
      apiVersion: eventing.knative.dev/v1
      kind: Broker
      name: default
"""
    )
    up = await serving_up([yaml], ["--autoscaler-config", "allow-zero-initial-scale=true"])

    async def beat() -> bool:
        return any(e["path"] == "/beats" for e in received(tmp_path))

    await eventually(beat, 90, "an event from the source's container reached the sink")
    event = next(e for e in received(tmp_path) if e["path"] == "/beats")
    assert event["source"] == "/busybox"
    assert event["id"].startswith("boxed-beat-")
    assert json.loads(event["body"])["extensions"] == {"team": "blue"}  # the container got K_CE_OVERRIDES
    sources = {s["name"]: s for s in (await up.status())["eventing"]["sources"]}
    assert sources["boxed-beats"]["pid"] is not None
    [name] = [name for name in containers(up.state_dir) if "source-default-boxed-beats" in name]
    limits = await asyncio.to_thread(inspect, name, "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}")
    assert limits.split() == [str(64 * 1024 * 1024), str(250_000_000)]

    assert await up.stop() == 0
    assert containers(up.state_dir) == []
