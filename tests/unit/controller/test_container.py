"""How a user container runs from its image: the runtime client's command line and environment."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from controller.local.runtime.container import (
    AUTO,
    DOCKER,
    PODMAN,
    PROCESS,
    STATE_LABEL,
    ContainerRun,
    ContainerRuntime,
    container_name,
    owner_label,
    runs_as_container,
)
from controller.local.runtime.pod import PodPorts
from controller.local.runtime.podspec import PodContext, pod_processes
from serving.service import parse_documents

PODMAN_RT = ContainerRuntime(PODMAN, "/usr/bin/podman", ("--runtime", "runc"), ("--ulimit", "nofile=10:10"))
PORTS = PodPorts(user=21001, serving=21002, admin=21003, stats=21004, metrics=21005)

YAML = """
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
  namespace: team
spec:
  template:
    spec:
      containers:
        - image: registry.example/hello:1
          args: ["--listen=:$(PORT)", "--greeting=$(GREETING)"]
          workingDir: /srv
          imagePullPolicy: Never
          ports:
            - containerPort: 5000
          resources:
            limits:
              cpu: 500m
              memory: 64Mi
          env:
            - name: GREETING
              value: hi
            - name: HOME
              value: /srv/home
"""


@pytest.mark.parametrize(
    ("choice", "image", "command", "container"),
    [
        pytest.param(AUTO, "app", (), True, id="auto-image-only"),
        pytest.param(AUTO, "app", ("python3",), False, id="auto-with-command-is-a-process"),
        pytest.param(PODMAN, "app", ("python3",), True, id="named-runtime-runs-every-image"),
        pytest.param(DOCKER, None, ("python3",), False, id="no-image-is-a-process"),
        pytest.param(PROCESS, "app", (), False, id="process-never"),
    ],
)
def test_what_runs_as_a_container(
    choice: str, image: str | None, command: tuple[str, ...], container: bool
) -> None:
    assert runs_as_container(choice, image, command) is container


def context(tmp_path: Path) -> PodContext:
    [service] = parse_documents(YAML, tmp_path / "service.yaml")
    return PodContext(
        namespace="team",
        service="hello",
        configuration="hello",
        revision="hello-00001",
        template=service.template,
        base_dir=tmp_path,
        log_dir=tmp_path / ".serving" / "logs",
        drain_quiet_period=1.0,
        host_env={"PATH": "/usr/bin", "HOME": "/home/me", "XDG_RUNTIME_DIR": "/run/user/0", "SECRET": "host"},
        runtime=PODMAN_RT,
        state_dir=tmp_path / ".serving",
    )


def test_container_pod_runs_the_runtime_client(tmp_path: Path) -> None:
    user = pod_processes(context(tmp_path), "hello-00001-abcde", PORTS).user()
    run = user.container
    assert run is not None
    assert run.name == container_name(tmp_path / ".serving", "hello-00001-abcde")
    assert run.name.startswith("serving-")
    assert run.name.endswith("-hello-00001-abcde")
    argv = user.argv
    assert argv[:4] == ("/usr/bin/podman", "--runtime", "runc", "run")
    for flag in ("--rm", "--init"):
        assert flag in argv
    # The container listens on its containerPort, published on the pod's loopback user port.
    assert argv[argv.index("--publish") + 1] == "127.0.0.1:21001:5000"
    assert owner_label(tmp_path / ".serving") in argv
    assert owner_label(tmp_path / ".serving") == f"{STATE_LABEL}={(tmp_path / '.serving').resolve()}"
    assert argv[argv.index("--workdir") + 1] == "/srv"
    assert argv[argv.index("--cpus") + 1] == "0.5"
    assert argv[argv.index("--memory") + 1] == str(64 * 1024 * 1024)
    assert argv[argv.index("--pull") + 1] == "never"
    assert argv[-3:] == ("registry.example/hello:1", "--listen=:5000", "--greeting=hi")
    assert "--entrypoint" not in argv  # args alone replace the image's CMD, keeping its entrypoint
    assert run.pull_policy == "Never"
    # Values travel in the client's environment, by name: none on the command line...
    assert {"GREETING", "PORT", "K_SERVICE"} <= set(argv)
    assert (user.env["GREETING"], user.env["PORT"], user.env["K_REVISION"]) == ("hi", "5000", "hello-00001")
    # ...except those the client reads itself (HOME), which go in a 0600 file, and the host's own
    # variables are not passed in.
    assert user.env["HOME"] == "/home/me"
    env_file = Path(argv[argv.index("--env-file") + 1])
    assert env_file.read_text() == "HOME=/srv/home\n"
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert not any("/srv/home" in part for part in argv)
    assert user.env["XDG_RUNTIME_DIR"] == "/run/user/0"
    assert "SECRET" not in user.env


def test_command_replaces_the_entrypoint(tmp_path: Path) -> None:
    run = ContainerRun(
        runtime=dataclasses.replace(PODMAN_RT, global_args=()),
        name="c",
        image="app",
        state_dir=tmp_path,
        host_port=1,
        container_port=8080,
        command=("python3", "-m", "app"),
        args=("--debug",),
    )
    argv = run.argv()
    assert argv[argv.index("--entrypoint") + 1] == "python3"
    assert argv[-4:] == ("app", "-m", "app", "--debug")
