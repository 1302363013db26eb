"""Pod logs under a real `serving up` stay bounded while an app prints 30 MB: they are rotated
(copy-truncate), the newest copies are kept, and `serving logs -f` follows across every rotation."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.integration.conftest import SERVING, ServingUp, eventually
from tests.integration.test_up import run_cli

Start = Callable[..., Awaitable[ServingUp]]

MAX_BYTES = 1024 * 1024
MAX_FILES = 4
CHATTY_APP = '''"""Prints 30 MB (30 chunks of 1000 numbered 1 KB lines, ~5 MB/s), then serves on $PORT."""
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

padding = "x" * 1000
for chunk in range(30):
    for line in range(1000):
        print(f"chunk {chunk:02d} line {line:04d} {padding}")
    sys.stdout.flush()
    time.sleep(0.2)
print("done", flush=True)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''
LINE = re.compile(r"^chatty-00001-\w+ user-container \| chunk (\d\d) line (\d{4}) x{1000}$")


async def test_pod_logs_are_rotated_and_followed(
    serving_up: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVING_LOG_MAX_SIZE", str(MAX_BYTES))
    monkeypatch.setenv("SERVING_LOG_MAX_FILES", str(MAX_FILES))
    monkeypatch.setenv("SERVING_LOG_CHECK_INTERVAL", "100ms")
    (tmp_path / "chatty.py").write_text(CHATTY_APP)
    yaml = tmp_path / "chatty.yaml"
    yaml.write_text(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: chatty\nspec:\n  template:\n"
        "    spec:\n      containers:\n        - image: example/chatty\n"
        f'          command: ["{sys.executable}", "chatty.py"]\n'
    )
    up = await serving_up([yaml])
    follow_out = tmp_path / "follow.out"
    with follow_out.open("wb") as sink:
        follower = await asyncio.create_subprocess_exec(
            *SERVING, "logs", "chatty", "-f", cwd=tmp_path, stdout=sink, stderr=asyncio.subprocess.STDOUT
        )
    try:
        logs = up.state_dir / "logs" / "default" / "chatty"
        largest = 0

        async def done() -> bool:
            nonlocal largest
            for f in logs.glob("*/user-container.log*"):
                with contextlib.suppress(FileNotFoundError):  # rotated away between the listing and the stat
                    largest = max(largest, f.stat().st_size)
            return "done\n" in follow_out.read_text(errors="replace")

        await eventually(done, 90, "`serving logs -f` never printed the app's last line", interval=0.05)
    finally:
        if follower.returncode is None:
            follower.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(follower.wait(), 10) == 0

    [pod] = [p for p in logs.iterdir() if p.is_dir()]
    log = pod / "user-container.log"
    copies = [pod / f"user-container.log.{n}" for n in range(1, MAX_FILES)]
    assert all(c.exists() for c in copies), "the newest rotated copies are kept"
    assert not (pod / f"user-container.log.{MAX_FILES}").exists(), "older copies are dropped"
    # Bounded: the limit plus what the app writes between two checks on a busy machine (30 MB written).
    assert largest <= MAX_BYTES + 3 * 1024 * 1024
    assert sum(f.stat().st_size for f in [log, *copies]) <= MAX_FILES * (MAX_BYTES + 3 * 1024 * 1024)
    assert (pod / "queue-proxy.log").exists()

    printed = follow_out.read_text().splitlines()
    assert printed[-1].endswith("user-container | done")
    body = [line for line in printed[:-1] if "[serving logs:" not in line]
    numbers = []
    malformed = []
    for line in body:
        match = LINE.match(line)
        if match is None:
            malformed.append(line[:120])
        else:
            numbers.append((int(match[1]), int(match[2])))
    assert numbers == sorted(set(numbers)), "lines printed twice or out of order"
    # A write lost to a rotation can leave a line without its start or end: one per rotation at most.
    assert len(malformed) <= 30, malformed[:5]
    # The follower starts with the live file (as `kubectl logs -f`), maybe after the first rotations; from
    # there on every line is printed, but for what copy-truncate loses between its last size check and the
    # truncation (a few lines at this app's bursts of ~250 MB/s; a few hundred when `serving up` is
    # descheduled right then on a loaded machine) and what a follower more than the kept copies behind
    # skips (saying so).
    first = numbers[0][0] * 1000 + numbers[0][1]
    assert first < 15_000, "the follower started too late to see 15 rotations"
    assert numbers[-1] == (29, 999)
    assert len(numbers) >= 0.95 * (30_000 - first), (first, len(numbers))

    code, out, _ = await run_cli("logs", "chatty", cwd=tmp_path)
    assert code == 0
    assert out.endswith("user-container | done\n")
    assert len(out) <= MAX_BYTES + 3 * 1024 * 1024, "`serving logs` prints the live file only, as kubectl"
