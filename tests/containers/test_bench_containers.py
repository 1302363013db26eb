"""`serving bench scale-from-zero` with app=image, end to end through the command line: a Service naming only
the busybox image is woken from zero as a real container, its floor is the same image started by podman
directly, and no container outlives the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.local.runtime.container import STATE_LABEL

pytestmark = pytest.mark.containers


def _containers_under(folder: Path) -> list[str]:
    """Names of the containers (running or not) started for a state folder inside `folder`."""
    listed = subprocess.run(
        ["podman", "ps", "--all", "--format", "json", "--filter", f"label={STATE_LABEL}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found: list[dict[str, Any]] = json.loads(listed.stdout or "[]")
    inside = str(folder.resolve())
    return [
        name
        for c in found
        if str((c.get("Labels") or {}).get(STATE_LABEL, "")).startswith(inside)
        for name in c.get("Names") or []
    ]


@pytest.mark.timeout(240)
def test_scale_from_zero_wakes_an_image_and_times_its_floor(tmp_path: Path, busybox_ref: str) -> None:
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "controller.cli", "bench", "scale-from-zero", "--duration", "1"]
    for param in ("app=image", f"image={busybox_ref}", "counts=[1]", "grace=1s", "settle_timeout=90"):
        argv += ["--set", param]
    proc = subprocess.run(
        [*argv, "--set", "request_timeout=30", "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=tmp_path,
        check=False,
    )
    logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(out.glob("**/serving-up.log")))
    # 0: every bar met, 1: the run completed but a bar was missed (a busy machine may do that).
    assert proc.returncode in (0, 1), f"exit {proc.returncode}\n{proc.stderr}\n{logs}"
    summary = json.loads((out / "summary.json").read_text())
    [wake] = summary["wakes"]
    assert wake["service"] == "sfz-1-01"
    assert wake["time_to_first_200"] is not None
    assert wake["time_to_first_200"] > 0
    assert wake["activator_wait"] is not None  # it was at zero: the request waited for the new pod
    [floor] = summary["floor"]
    assert floor["count"] == 1
    assert all(t is not None and t > 0 for t in floor["times_ms"])
    # Both answers came from busybox httpd in a container (its log names the bridge's address, not loopback).
    pod_logs = sorted(out.glob("group-1/serving-up/logs/default/sfz-1-01/*/user-container.log"))
    assert any("response:200" in p.read_text() for p in pod_logs), pod_logs
    assert "response:200" in (out / "floor" / "1-at-once-01.log").read_text()
    assert f"containers of {busybox_ref}" in (out / "report.md").read_text()
    assert _containers_under(tmp_path) == []
