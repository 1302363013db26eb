from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.local.runtime.pod import PodPorts
from controller.local.runtime.podspec import (
    USER_CONTAINER_NICE,
    PodContext,
    grace_seconds,
    pod_processes,
    readiness_http_path,
    readiness_probe_json,
)
from serving.service import parse_documents

YAML = """
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
  namespace: team
spec:
  template:
    spec:
      containerConcurrency: 4
      timeoutSeconds: 30
      containers:
        - image: example/hello
          command: ["python3", "app.py"]
          args: ["--port=$(PORT)", "--name=$(K_SERVICE)-$(GREETING)", "$$(PORT)", "$(UNDEFINED)"]
          workingDir: app
          ports:
            - containerPort: 5000
          readinessProbe:
            httpGet:
              path: /healthz
              port: 5000
          env:
            - name: GREETING
              value: hi
            - name: MESSAGE
              value: "$(GREETING) on $(PORT)"
"""

PORTS = PodPorts(user=21001, serving=21002, admin=21003, stats=21004, metrics=21005)


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
        host_env={"PATH": "/usr/bin", "HOME": "/home/me", "PORT": "1"},
    )


def test_user_process_follows_the_runtime_contract(tmp_path: Path) -> None:
    user = pod_processes(context(tmp_path), "hello-00001-abcde", PORTS).user()
    assert user.argv == ("python3", "app.py", "--port=21001", "--name=hello-hi", "$(PORT)", "$(UNDEFINED)")
    assert user.cwd == tmp_path / "app"
    assert user.env["PORT"] == "21001"
    assert (user.env["K_SERVICE"], user.env["K_CONFIGURATION"], user.env["K_REVISION"]) == (
        "hello",
        "hello",
        "hello-00001",
    )
    # Knative appends PORT after the user's variables, so an env value cannot see it.
    assert user.env["MESSAGE"] == "hi on $(PORT)"
    assert user.env["HOME"] == "/home/me"
    assert user.env["PATH"].split(":") == ["/usr/bin", str(Path(sys.executable).parent)]
    assert user.log_path == tmp_path / ".serving/logs/team/hello/hello-00001-abcde/user-container.log"
    # A lower priority than the platform's processes, as a container without a CPU request has on a node.
    assert user.nice == USER_CONTAINER_NICE > 0


def test_queue_proxy_gets_knative_environment_on_free_ports(tmp_path: Path) -> None:
    qp = pod_processes(context(tmp_path), "hello-00001-abcde", PORTS).queue_proxy
    assert qp.argv[1:] == ("-m", "controller.cli", "queue-proxy")
    expected = {
        "SERVING_NAMESPACE": "team",
        "SERVING_CONFIGURATION": "hello",
        "SERVING_REVISION": "hello-00001",
        "SERVING_SERVICE": "hello",
        "SERVING_POD": "hello-00001-abcde",
        "SERVING_POD_IP": "127.0.0.1",
        "CONTAINER_CONCURRENCY": "4",
        "USER_PORT": "21001",
        "REVISION_TIMEOUT_SECONDS": "30",
        "QUEUE_BIND_ADDRESS": "127.0.0.1",
        "QUEUE_SERVING_PORT": "21002",
        "QUEUE_ADMIN_PORT": "21003",
        "QUEUE_STATS_PORT": "21004",
        "QUEUE_METRICS_PORT": "21005",
        "DRAIN_QUIET_PERIOD": "1s",
    }
    assert {k: qp.env[k] for k in expected} == expected
    assert json.loads(qp.env["SERVING_READINESS_PROBE"]) == {"httpGet": {"path": "/healthz"}}
    assert grace_seconds(context(tmp_path)) == 32.0
    assert qp.nice == 0


def test_probe_ports_are_dropped_and_absent_probe_is_empty() -> None:
    assert readiness_probe_json(None) == ""
    assert json.loads(readiness_probe_json({"tcpSocket": {"port": 8080}, "successThreshold": 1})) == {
        "tcpSocket": {},
        "successThreshold": 1,
    }


@pytest.mark.parametrize(
    ("probe", "path"),
    [
        pytest.param({"httpGet": {"path": "/healthz", "port": 5000}}, "/healthz", id="http"),
        pytest.param({"httpGet": {}}, "/", id="http-default-path"),
        pytest.param({"httpGet": {"path": "ready"}}, "/ready", id="relative-path"),
        pytest.param({"httpGet": {"path": "/h", "scheme": "HTTPS"}}, None, id="https"),
        pytest.param({"httpGet": {"path": "/h", "host": "example.com"}}, None, id="other-host"),
        pytest.param({"tcpSocket": {}}, None, id="tcp"),
        pytest.param(None, None, id="none"),
    ],
)
def test_readiness_path_the_controller_checks_itself(probe: dict[str, Any] | None, path: str | None) -> None:
    assert readiness_http_path(probe) == path


def test_pod_processes_carry_the_readiness_path(tmp_path: Path) -> None:
    processes = pod_processes(context(tmp_path), "hello-00001-abcde", PORTS)
    assert processes.readiness_path == "/healthz"
    assert processes.queue_proxy.env["SERVING_USER_PROTOCOL"] == "http1"


def test_an_h2c_apps_queue_proxy_is_told_so_and_the_controller_does_not_get_it_over_http1(
    tmp_path: Path,
) -> None:
    h2c = YAML.replace("- containerPort: 5000", "- containerPort: 5000\n              name: h2c")
    [service] = parse_documents(h2c, tmp_path / "service.yaml")
    ctx = dataclasses.replace(context(tmp_path), template=service.template)
    processes = pod_processes(ctx, "hello-00001-abcde", PORTS)
    assert processes.queue_proxy.env["SERVING_USER_PROTOCOL"] == "h2c"
    assert processes.readiness_path is None
