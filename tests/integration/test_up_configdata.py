"""`serving up` with ConfigMaps and Secrets in its files: a process pod's environment from `valueFrom` and
`envFrom`, a missing ConfigMap shown as the kubelet's CreateContainerConfigError until the file defines it, an
edited ConfigMap making no new revision (as in Knative), and no Secret value in status or the output."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.integration.conftest import ServingUp, eventually

Start = Callable[..., Awaitable[ServingUp]]
SECRET_VALUE = "s3cr3t-value-never-shown"
# base64 of SECRET_VALUE, as a Secret's `data` holds it
SECRET_B64 = "czNjcjN0LXZhbHVlLW5ldmVyLXNob3du"

APP = """
import json, os
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        names = ("GREETING", "DB_PASSWORD", "DB_USER", "COLOR", "OPTIONAL")
        body = json.dumps({k: os.environ.get(k) for k in names}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

SERVICE = f"""\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: configured
spec:
  template:
    spec:
      containers:
        - command: ["{sys.executable}", "app.py"]
          envFrom:
            - secretRef:
                name: db
              prefix: DB_
          env:
            - name: GREETING
              valueFrom:
                configMapKeyRef:
                  name: settings
                  key: greeting
            - name: OPTIONAL
              valueFrom:
                configMapKeyRef:
                  name: absent
                  key: anything
                  optional: true
"""

SECRET = f"""\
---
apiVersion: v1
kind: Secret
metadata:
  name: db
stringData:
  USER: admin
data:
  PASSWORD: {SECRET_B64}
"""


def config_map(greeting: str) -> str:
    return f"""\
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: {greeting}
"""


async def test_env_from_config_maps_and_secrets(serving_up: Start, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    path = tmp_path / "service.yaml"
    # The ConfigMap is missing at first: the pod waits, saying why, as the kubelet does.
    path.write_text(SERVICE + SECRET)
    up = await serving_up([path])

    async def backing_off() -> bool:
        rev = await up.revision("configured-00001")
        reasons = [str(r) for r in (rev or {}).get("reasons", [])]
        return any("CreateContainerConfigError: restarting in 8s" in r for r in reasons) and any(
            'configmap "settings" not found' in r for r in reasons
        )

    await eventually(backing_off, 30, "no pod reason names the missing ConfigMap")

    # Defining it retries the pod at once, not after the 8 s back-off.
    path.write_text(SERVICE + SECRET + config_map("hello from a ConfigMap"))
    await up.wait_revision(
        "configured-00001", lambda r: r["ready_pods"] == 1, 5, "pod did not start once the ConfigMap came"
    )
    status, body = await up.get("configured")
    assert status == 200
    assert json.loads(body) == {
        "GREETING": "hello from a ConfigMap",
        "DB_PASSWORD": SECRET_VALUE,
        "DB_USER": "admin",
        "COLOR": None,
        "OPTIONAL": None,
    }

    # Knative makes no revision for a ConfigMap change: running pods keep the environment they started with.
    path.write_text(SERVICE + SECRET + config_map("changed"))
    await eventually(
        lambda: _applied(up, "ConfigMap default/settings changed"), 30, "the edit was not applied"
    )
    revisions = [r["name"] for s in (await up.status())["services"] for r in s["revisions"]]
    assert revisions == ["configured-00001"]
    assert json.loads((await up.get("configured"))[1])["GREETING"] == "hello from a ConfigMap"

    status_text = json.dumps(await up.status())
    assert await up.stop() == 0
    assert SECRET_VALUE not in status_text
    assert SECRET_VALUE not in up.output()
    logs = "".join(p.read_text(errors="replace") for p in up.state_dir.rglob("*.log"))
    assert SECRET_VALUE not in logs


async def _applied(up: ServingUp, line: str) -> bool:
    return line in up.output()
