"""`serving apply`, `list`, `describe` and `delete` against a running `serving up`, as `kn` and `kubectl`
users expect: an empty platform to apply to, one message per problem and nothing changed when any document is
invalid, conditions and events in `describe`, Secret values never shown, and file-defined objects left to
their files."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from tests.integration.conftest import SERVING, ServingUp, write_app_service

Start = Callable[..., Awaitable[ServingUp]]
SECRET_VALUE = "verbs-secret-value"

CONFIG = f"""\
apiVersion: v1
kind: ConfigMap
metadata:
  name: greeting
data:
  target: from a ConfigMap
---
apiVersion: v1
kind: Secret
metadata:
  name: token
stringData:
  token: {SECRET_VALUE}
"""

SERVICE = f"""\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: applied
spec:
  template:
    spec:
      containers:
        - command: ["{sys.executable}", "app.py"]
          env:
            - name: TARGET
              valueFrom:
                configMapKeyRef:
                  name: greeting
                  key: target
            - name: TOKEN
              valueFrom:
                secretKeyRef:
                  name: token
                  key: token
"""


async def serving(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `serving ARGS` in `folder` (where the `serving up` under test keeps its state)."""
    return await asyncio.to_thread(
        subprocess.run, [*SERVING, *args], cwd=folder, capture_output=True, text=True, timeout=120
    )


async def test_apply_list_describe_delete(serving_up: Start, tmp_path: Path) -> None:
    write_app_service(tmp_path, "from-file")  # also writes app.py, which the applied Service runs too
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "service.yaml").write_text(SERVICE)
    (tmp_path / "broken.yaml").write_text(SERVICE.replace("containers:", "containerz:"))
    up = await serving_up([])

    empty = await serving(tmp_path, "list")
    assert (empty.returncode, empty.stdout) == (0, "No services found.\n")

    bad = await serving(tmp_path, "apply", "-f", "config.yaml", "-f", "broken.yaml")
    assert bad.returncode == 2
    assert (
        f"{tmp_path / 'broken.yaml'}: document 1 (Service/applied): spec.template.spec.containerz"
        in bad.stderr
    )
    assert SECRET_VALUE not in bad.stderr
    assert (await up.status())["services"] == []  # nothing applied, not even the valid ConfigMap

    applied = await serving(tmp_path, "apply", "-f", "service.yaml", "-f", "config.yaml")
    assert applied.returncode == 0, applied.stderr
    for line in ("Service default/applied created", "Revision default/applied-00001 created"):
        assert line in applied.stdout
    assert "ConfigMap default/greeting created" in applied.stdout
    await up.wait_revision("applied-00001", lambda r: r["ready_pods"] == 1, 60, "applied Service never ready")
    status, body = await up.get("applied")
    assert status == 200
    assert body.startswith("from a ConfigMap applied-00001")

    revisions = await serving(tmp_path, "list", "revisions")
    assert revisions.returncode == 0
    [row] = [line.split() for line in revisions.stdout.splitlines() if "applied-00001" in line]
    assert row[:5] == ["default", "applied-00001", "applied", "100%", "1/1"]

    described = await serving(tmp_path, "describe", "ksvc", "applied")
    assert described.returncode == 0, described.stderr
    out = described.stdout
    assert "URL:        http://applied.default.localhost:" in out
    assert "(applied)" in out
    assert [
        line.split()[:2] for line in out.splitlines() if line.strip().startswith(("Ready", "Routes"))
    ] == [
        ["Ready", "True"],
        ["RoutesReady", "True"],
    ]
    assert "Revision default/applied-00001 created" in out  # its events
    secret = await serving(tmp_path, "describe", "secret", "token")
    assert secret.returncode == 0
    assert "token: 18 bytes" in secret.stdout
    assert SECRET_VALUE not in secret.stdout + described.stdout

    deleted = await serving(tmp_path, "delete", "service", "applied")
    assert deleted.returncode == 0
    assert "Service default/applied deleted with its revisions" in deleted.stdout
    assert (await up.get("applied"))[0] == 404
    missing = await serving(tmp_path, "delete", "service", "applied")
    assert missing.returncode == 1
    assert "serving delete: Service default/applied not found" in missing.stderr
    assert (await serving(tmp_path, "list")).stdout == "No services found.\n"
    assert await up.stop() == 0


async def test_objects_of_serving_up_files_stay_with_their_files(serving_up: Start, tmp_path: Path) -> None:
    path = write_app_service(tmp_path, "from-file")
    up = await serving_up([path])
    await up.wait_revision("from-file-00001", lambda r: r["ready_pods"] >= 0, 30, "file Service not created")

    refused = await serving(tmp_path, "delete", "ksvc", "from-file")
    assert refused.returncode == 1
    assert f"Service default/from-file is defined in {path}, which `serving up` runs" in refused.stderr
    again = await serving(tmp_path, "apply", "-f", str(path))
    assert again.returncode == 2
    assert f"defined in {path}, which `serving up` runs: edit that file" in again.stderr
    listed = await serving(tmp_path, "list")
    assert "from-file" in listed.stdout
    assert await up.stop() == 0


async def test_verbs_without_a_running_serving_up_say_so(tmp_path: Path) -> None:
    result = await serving(tmp_path, "list")
    assert result.returncode == 1
    assert "no `serving up` is running with state dir" in result.stderr


async def test_the_control_api_changes_nothing_without_the_state_files_token(
    serving_up: Start, tmp_path: Path
) -> None:
    up = await serving_up([])
    state = json.loads((up.state_dir / "up.json").read_text())
    assert (up.state_dir / "up.json").stat().st_mode & 0o777 == 0o600
    body = json.dumps({"documents": [{"source": "x.yaml", "text": SERVICE}]})
    async with aiohttp.ClientSession() as session:
        url = f"{state['control_url']}/v1/apply"
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 403
        # A browser's form post (no preflight) carries text/plain: refused even with the token.
        headers = {"Content-Type": "text/plain", "Serving-Control-Token": state["control_token"]}
        async with session.post(url, data=body, headers=headers) as resp:
            assert resp.status == 415
        async with session.delete(f"{state['control_url']}/v1/service/default/anything") as resp:
            assert resp.status == 403
    assert (await up.status())["services"] == []
    assert await up.stop() == 0
