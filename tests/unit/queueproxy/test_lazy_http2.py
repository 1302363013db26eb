"""A queue-proxy whose app speaks HTTP/1.1 never loads the HTTP/2 side (the `h2` package and the engine's
h2 modules): it is a per-pod cost in memory (about 2 MiB of the sidecar's RSS) that such a pod never uses.
It is loaded when the app speaks h2c, when the platform does not say (Knative's rule: follow the request's
protocol), or when a client opens an HTTP/2 connection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

PROGRAM = """
import asyncio, os, sys
from queueproxy import main
from queueproxy.config import load_config

async def build():
    parts = main._build(load_config(os.environ))
    loaded = sorted(m for m in sys.modules if m == "h2" or m.startswith(("h2.", "serving.http.h2")))
    print(parts.h2_pool is not None, bool(loaded))

asyncio.run(build())
"""


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [("http1", "False False"), ("h2c", "True True"), ("", "True True")],
    ids=["http1", "h2c", "unset"],
)
def test_http2_is_loaded_only_where_it_may_be_used(protocol: str, expected: str) -> None:
    env = {
        "SERVING_NAMESPACE": "ns",
        "SERVING_CONFIGURATION": "cfg",
        "SERVING_REVISION": "rev",
        "SERVING_POD": "pod",
        "SERVING_POD_IP": "127.0.0.1",
        "SERVING_USER_PROTOCOL": protocol,
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected
