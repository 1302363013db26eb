"""A queue-proxy whose app speaks HTTP/1.1 never loads the HTTP/2 side (the `h2` package and the engine's
h2 modules): it is a per-pod cost in memory (about 2 MiB of the sidecar's RSS) that such a pod never uses.
It is loaded when the app speaks h2c, when the platform does not say (Knative's rule: follow the request's
protocol), or when a client opens an HTTP/2 connection. No queue-proxy loads a web framework at all."""

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


def queue_proxy_program(program: str, protocol: str) -> str:
    """What `program` prints, run in a fresh interpreter with a queue-proxy's environment."""
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
        [sys.executable, "-c", program],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [("http1", "False False"), ("h2c", "True True"), ("", "True True")],
    ids=["http1", "h2c", "unset"],
)
def test_http2_is_loaded_only_where_it_may_be_used(protocol: str, expected: str) -> None:
    assert queue_proxy_program(PROGRAM, protocol) == expected


NO_FRAMEWORK = """
import asyncio, os, sys
from queueproxy import main
from queueproxy.config import load_config
from queueproxy.probe import ProbeSpec, format_probe

async def app(reader, writer):
    await reader.readuntil(b"\\r\\n\\r\\n")
    writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n")
    writer.close()

async def run():
    server = await asyncio.start_server(app, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    os.environ["SERVING_READINESS_PROBE"] = format_probe(ProbeSpec(kind="http", path="/ready"))
    os.environ["USER_PORT"] = str(port)
    parts = main._build(load_config(os.environ))
    ready = await parts.readiness.check()
    await parts.readiness.close()
    framework = sorted(m for m in sys.modules if m.split(".")[0] in ("aiohttp", "multidict", "yarl"))
    print(ready, framework)

asyncio.run(run())
"""


def test_the_queue_proxy_loads_no_web_framework() -> None:
    """The side ports are engine endpoints and the HTTP probe is plain asyncio: aiohttp and its dependencies
    (11 MiB of every pod's sidecar) are never imported, an HTTP probe included."""
    assert queue_proxy_program(NO_FRAMEWORK, "http1") == "True []"
