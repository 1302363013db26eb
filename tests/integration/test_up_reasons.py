"""`serving status` says why a pod is not ready: an app that never listens on `$PORT`, and one whose
readiness probe answers 500, under a real `serving up`."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.integration.conftest import ServingUp
from tests.integration.test_up import run_cli

Start = Callable[..., Awaitable[ServingUp]]

SICK_APP = '''"""Listens on $PORT; answers 200 on / and 500 on /healthz."""
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        status = 500 if self.path == "/healthz" else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''

NOT_LISTENING = re.compile(r"^user-container running for (\d+)s but not listening on port (\d+)$")
PROBE_500 = re.compile(
    r"^user-container running for \d+s but its readiness probe GET /healthz on port \d+ answers 500$"
)


def service_yaml(name: str, command: list[str], probe: str = "") -> str:
    return f"""apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    spec:
      containers:
        - image: example/{name}
          command: {json.dumps(command)}{probe}
"""


async def status_json(folder: Path) -> dict[str, Any]:
    code, out, err = await run_cli("status", "--json", cwd=folder)
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


def revision(report: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for s in report["services"] for r in s["revisions"] if r["name"] == name)
    return found


def running_for(rev: dict[str, Any]) -> int:
    """Seconds the not-listening app has been running, as the revision's reason says (-1: another reason)."""
    match = NOT_LISTENING.match(rev["reason"] or "")
    return -1 if match is None else int(match[1])


async def test_status_says_why_pods_are_not_ready(serving_up: Start, tmp_path: Path) -> None:
    sleepy = tmp_path / "sleepy.yaml"
    sleepy.write_text(service_yaml("sleepy", [sys.executable, "-c", "import time; time.sleep(600)"]))
    (tmp_path / "sick.py").write_text(SICK_APP)
    sick = tmp_path / "sick.yaml"
    probe = "\n          readinessProbe:\n            httpGet:\n              path: /healthz"
    sick.write_text(service_yaml("sick", [sys.executable, "sick.py"], probe))
    up = await serving_up([sleepy, sick])

    await up.wait_revision(
        "sleepy-00001",
        lambda r: NOT_LISTENING.match(r["reason"] or "") is not None,
        60,
        "status never said that the app does not listen",
    )
    await up.wait_revision(
        "sick-00001",
        lambda r: PROBE_500.match(r["reason"] or "") is not None,
        60,
        "status never said that the readiness probe answers 500",
    )

    first = revision(await status_json(tmp_path), "sleepy-00001")
    contract = ("traffic_percent", "desired_pods", "actual_pods", "ready_pods", "mode", "stable_concurrency")
    assert set(contract) | {"panic_concurrency"} <= set(first), "the existing fields are all still there"
    assert (first["actual_pods"], first["ready_pods"]) == (1, 0)
    [pod] = first["pods"]
    assert pod["state"] == "Running"
    assert pod["reason"] == first["reason"]
    assert first["reasons"] == [first["reason"]]
    match = NOT_LISTENING.match(pod["reason"])
    assert match is not None
    await up.wait_revision(
        "sleepy-00001",
        lambda r: running_for(r) > int(match[1]),
        10,
        "the time the app has been running did not grow",
    )

    code, out, _ = await run_cli("status", cwd=tmp_path)
    assert code == 0
    assert re.search(
        rf"! {pod['name']}: user-container running for \d+s but not listening on port {match[2]}", out
    ), out
    assert re.search(r"! sick-00001-\w+: .*readiness probe GET /healthz on port \d+ answers 500", out), out
