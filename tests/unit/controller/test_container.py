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
    local_event_object_problems,
    owner_label,
    runs_as_container,
)
from controller.local.runtime.pod import PodPorts
from controller.local.runtime.podspec import PodContext, pod_processes
from controller.local.runtime.process import OsLauncher, ProcessSpec
from controller.local.runtime.volume import VolumeSet
from controller.local.sources import ContainerSources, SourceRun
from serving.configdata import ConfigData
from serving.events import ContainerSource
from serving.service import parse_documents, parse_manifests

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


SOURCE = """
apiVersion: sources.knative.dev/v1
kind: ContainerSource
metadata:
  name: beats
  namespace: team
spec:
  template:
    spec:
      containers:
        - image: registry.example/beats:1
          args: ["--every=$(EVERY)"]
          env:
            - name: EVERY
              value: 1s
            - name: HOME
              value: /srv/home
          resources:
            limits:
              cpu: 250m
              memory: 32Mi
  ceOverrides:
    extensions:
      team: blue
  sink:
    uri: http://127.0.0.1:9/default/default
"""


def source_run(tmp_path: Path, choice: str, runtime: ContainerRuntime | None) -> ProcessSpec:
    [source] = parse_manifests([(tmp_path / "source.yaml", SOURCE)]).events
    assert isinstance(source, ContainerSource)
    sources = ContainerSources(
        OsLauncher(),
        tmp_path / "logs",
        {"PATH": "/usr/bin", "HOME": "/home/me", "SECRET": "host"},
        lambda *_: None,
        runtime_choice=choice,
        container_runtime=lambda: runtime,
        state_dir=tmp_path / ".serving",
    )
    binding = {
        "K_SINK": "http://127.0.0.1:9/default/default",
        "K_CE_OVERRIDES": '{"extensions":{"team":"blue"}}',
    }
    return sources._spec(SourceRun(source, binding, "{}"))


def test_an_image_only_container_source_runs_on_the_hosts_network(tmp_path: Path) -> None:
    """Its K_SINK names the platform on loopback: the container shares the host's network, publishes
    nothing, gets its variables by name (those the client reads itself through a 0600 file) and its
    `resources.limits` as a Service's container does."""
    spec = source_run(tmp_path, AUTO, PODMAN_RT)
    run = spec.container
    assert run is not None
    assert run.name == container_name(tmp_path / ".serving", "source-team-beats")
    argv = spec.argv
    assert argv[argv.index("--network") + 1] == "host"
    assert "--publish" not in argv
    assert argv[-2:] == ("registry.example/beats:1", "--every=1s")
    assert argv[argv.index("--cpus") + 1] == "0.25"
    assert argv[argv.index("--memory") + 1] == str(32 * 1024 * 1024)
    assert {"K_SINK", "K_CE_OVERRIDES", "EVERY"} <= set(argv)
    assert spec.env["K_SINK"] == "http://127.0.0.1:9/default/default"
    assert spec.env["K_CE_OVERRIDES"] == '{"extensions":{"team":"blue"}}'
    assert Path(argv[argv.index("--env-file") + 1]).read_text() == "HOME=/srv/home\n"
    assert spec.env["HOME"] == "/home/me"
    assert "SECRET" not in spec.env


def test_a_container_source_needs_a_command_only_where_it_runs_as_a_process(tmp_path: Path) -> None:
    [source] = parse_manifests([(tmp_path / "source.yaml", SOURCE)]).events
    assert local_event_object_problems(source, AUTO) == []
    assert local_event_object_problems(source, PODMAN) == []
    [problem] = local_event_object_problems(source, PROCESS)
    assert "spec.template.spec.containers[0].command: required locally with --runtime process" in problem
    with pytest.raises(OSError, match="no container runtime"):
        source_run(tmp_path, AUTO, None)


SOURCE_WITH_VOLUMES = """
apiVersion: sources.knative.dev/v1
kind: ContainerSource
metadata:
  name: beats
  namespace: team
spec:
  template:
    spec:
      containers:
        - image: registry.example/beats:1
          volumeMounts:
            - name: settings
              mountPath: /etc/beats
              readOnly: true
            - name: scratch
              mountPath: /tmp/scratch
      volumes:
        - name: settings
          configMap:
            name: beats-settings
        - name: scratch
          emptyDir: {}
  sink:
    uri: http://127.0.0.1:9/default/default
"""


async def test_a_container_source_run_from_its_image_mounts_its_volumes(tmp_path: Path) -> None:
    """A ConfigMap volume is written as it is now and mounted read-only, an emptyDir made, as for a pod's
    container; the folder goes when the source stops. As a process it has no runtime to mount them with."""
    [source] = parse_manifests([(tmp_path / "source.yaml", SOURCE_WITH_VOLUMES)]).events
    assert isinstance(source, ContainerSource)
    assert local_event_object_problems(source, AUTO) == []
    problems = local_event_object_problems(source, PROCESS)  # and the command it lacks as a process
    assert any("spec.template.spec.volumes: volumes need a container runtime" in p for p in problems)

    settings = ConfigData(
        kind="ConfigMap",
        namespace="team",
        name="beats-settings",
        data={"every": b"1s\n"},
        source=tmp_path / "config.yaml",
    )
    volumes = VolumeSet(tmp_path / "volumes", tmp_path / "memory")
    sources = ContainerSources(
        OsLauncher(),
        tmp_path / "logs",
        {"PATH": "/usr/bin"},
        lambda kind, namespace, name: settings if (kind, namespace, name) == settings.key else None,
        runtime_choice=AUTO,
        container_runtime=lambda: PODMAN_RT,
        state_dir=tmp_path / ".serving",
        volumes=volumes,
    )
    binding = {"K_SINK": "http://127.0.0.1:9/default/default"}
    spec = sources._spec(SourceRun(source, binding, "{}"))
    argv = list(spec.argv)
    flags = [argv[i + 1] for i, flag in enumerate(argv) if flag == "--volume"]
    folder = tmp_path / "volumes" / "source-team-beats"
    assert flags == [f"{folder / 'settings'}:/etc/beats:ro", f"{folder / 'scratch'}:/tmp/scratch"]
    assert (folder / "settings" / "every").read_text() == "1s\n"
    assert (folder / "scratch").is_dir()

    await sources.set([SourceRun(source, binding, "{}")])
    await sources.close()
    assert not folder.exists()
