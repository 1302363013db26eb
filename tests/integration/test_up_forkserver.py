"""`serving up` and its fork server: a lost fork server costs no running pod, a Service with a very large
environment starts beside the others, and Ctrl-C still leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.integration.conftest import ServingUp, eventually, marked_processes, write_app_service

Start = Callable[..., Awaitable[ServingUp]]

STAY_UP = {"autoscaling.knative.dev/min-scale": "1"}
"""Keeps one pod whatever the traffic, so that a pod that changes was replaced, not scaled."""

COUNTING_APP = '''"""Answers how many BIG_ variables of 200 bytes it was given."""
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = str(sum(1 for k, v in os.environ.items() if k.startswith("BIG_") and len(v) == 200)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''


def large_service(folder: Path, variables: int) -> str:
    """A Service document running COUNTING_APP with `variables` BIG_ variables of 200 bytes."""
    (folder / "counting.py").write_text(COUNTING_APP)
    env = "".join(
        f'\n            - name: BIG_{i:04}\n              value: "{"x" * 200}"' for i in range(variables)
    )
    return f"""apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: big
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: "1"
    spec:
      containers:
        - image: example/big
          command: ["{sys.executable}", "counting.py"]
          env:{env}
"""


def parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError):
        return 0


def fork_servers(up: ServingUp) -> list[int]:
    """The fork server processes of `up` (queue-proxies it forked share its command line, not its parent)."""
    assert up.proc is not None
    return [
        pid
        for pid, cmdline in marked_processes(up.marker)
        if "controller.local.runtime.forkhost" in cmdline and parent(pid) == up.proc.pid
    ]


async def answering_pid(up: ServingUp, service: str) -> int:
    status, body = await up.get(service)
    assert status == 200, body
    return int(body.split()[-1])


async def pods(up: ServingUp, revision: str) -> list[tuple[str, int]]:
    """(name, restarts) of the revision's pods."""
    rev = await up.revision(revision)
    assert rev is not None
    return [(pod["name"], pod["restarts"]) for pod in rev["pods"]]


async def test_killed_fork_server_costs_no_pod_and_sigint_still_stops_everything(
    serving_up: Start, tmp_path: Path
) -> None:
    up = await serving_up([write_app_service(tmp_path, "hello", annotations=STAY_UP)])
    await up.wait_revision("hello-00001", lambda r: r["ready_pods"] == 1, 60, "hello never became ready")
    app = await answering_pid(up, "hello")
    before = await pods(up, "hello-00001")
    [server] = fork_servers(up)
    os.kill(server, signal.SIGKILL)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # long enough for a dead queue-proxy to be noticed and replaced
        assert await answering_pid(up, "hello") == app, "the app was replaced after the fork server died"
        await asyncio.sleep(0.2)
    assert await pods(up, "hello-00001") == before
    assert server not in fork_servers(up)
    assert await up.stop() == 0  # checks that no process is left behind, the orphaned pod's included


async def test_service_with_a_large_environment_starts_beside_a_running_one(
    serving_up: Start, tmp_path: Path
) -> None:
    """1,000 variables of 200 bytes make the pod's spec larger than the fork server's socket buffer."""
    hello = write_app_service(tmp_path, "hello", annotations=STAY_UP)
    up = await serving_up([hello])
    await up.wait_revision("hello-00001", lambda r: r["ready_pods"] == 1, 60, "hello never became ready")
    app = await answering_pid(up, "hello")
    before = await pods(up, "hello-00001")
    [server] = fork_servers(up)
    hello.write_text(hello.read_text() + "---\n" + large_service(tmp_path, 1000))

    async def big_ready() -> bool:
        status, _ = await up.get("big")
        return status == 200

    await eventually(big_ready, 60, f"the large Service never answered:\n{up.output()}", interval=0.2)
    assert await up.get("big") == (200, "1000")
    assert await answering_pid(up, "hello") == app, "a running pod was replaced"
    assert await pods(up, "hello-00001") == before
    assert fork_servers(up) == [server], "the fork server was lost"
    assert await up.stop() == 0
