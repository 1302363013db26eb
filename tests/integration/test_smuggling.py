"""Request smuggling through every hop, with raw sockets against real processes.

A client that names `Content-Length` in `Connection` must not get its body read as a second request by the
next hop: not by the queue-proxy's app, not through the router's Serve path, not through the activator. The
tell is another client's request being answered by the smuggled one (another Service's revision, a sleep).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.fakes.app import FakeApp, running_app
from tests.fakes.queueproxy import QueueProxyProcess
from tests.integration.conftest import ServingUp
from tests.unit.serving.http.rawhttp import RawClient, Response

# Answers GET and POST (echoing the body) with the revision it runs as; `/sleep` sleeps 1.5 s first.
APP = """
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, body):
        if self.path.startswith("/sleep"):
            time.sleep(1.5)
            body = b"slept " + body
        body = b"%s rev %s" % (body, os.environ["K_REVISION"].encode())
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._answer(self.path.encode())

    def do_POST(self):
        self._answer(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True


Server(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def smuggling(host: str, smuggled_to: str) -> bytes:
    """A POST whose body is a whole request to another revision, with Content-Length named in Connection."""
    inner = (
        f"GET /sleep HTTP/1.1\r\nHost: {host}\r\nKnative-Serving-Revision: {smuggled_to}\r\n"
        "Knative-Serving-Namespace: default\r\n\r\n"
    ).encode()
    return (
        f"POST /echo HTTP/1.1\r\nHost: {host}\r\nConnection: Content-Length\r\n"
        f"Content-Length: {len(inner)}\r\n\r\n"
    ).encode() + inner


def service(folder: Path, name: str, min_scale: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"""apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: "{min_scale}"
        autoscaling.knative.dev/target-burst-capacity: "{0 if min_scale != "0" else 200}"
    spec:
      containers:
        - image: example/{name}
          command: ["{sys.executable}", "app.py"]
"""
    )
    return path


@pytest.fixture
async def app() -> AsyncIterator[FakeApp]:
    async for running in running_app():
        yield running


async def raw(port: int, data: bytes) -> tuple[RawClient, Response]:
    client = await RawClient.connect(port)
    return client, await client.request(data)


async def test_queue_proxy_relays_the_body_as_a_body(app: FakeApp) -> None:
    async with QueueProxyProcess.start(user_port=app.port) as qp:
        attacker, first = await raw(qp.port, smuggling("a", "x-00001"))
        victim, second = await raw(qp.port, b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
        third = await attacker.request(b"GET /echo?again HTTP/1.1\r\nHost: a\r\n\r\n")
        await attacker.close()
        await victim.close()
    assert first.status == 200
    assert first.body.startswith(b"GET /sleep HTTP/1.1\r\n")
    assert (second.status, second.header("x-echo-target")) == (200, "/echo")
    assert (third.status, third.header("x-echo-target")) == (200, "/echo?again")
    assert app.requests == 3


async def test_smuggled_request_never_answers_another_client_through_serving_up(
    serving_up: Callable[..., Awaitable[ServingUp]], tmp_path: Path
) -> None:
    """Serve mode (router → queue-proxy: alpha and beta keep a pod and need no burst capacity), and the
    activator path (zeta: at zero, so in Proxy mode; the activator wakes it)."""
    (tmp_path / "app.py").write_text(APP)
    files = [service(tmp_path, "alpha", "1"), service(tmp_path, "beta", "1"), service(tmp_path, "zeta", "0")]
    up = await serving_up(files)
    for name in ("alpha-00001", "beta-00001"):
        await up.wait_revision(name, lambda r: r["ready_pods"] >= 1 and r["mode"] == "Serve", 60, name)
    for target in ("alpha", "zeta"):
        attacker, first = await raw(up.port, smuggling(up.host(target), "alpha-00001"))
        victim, second = await raw(up.port, f"GET /mine HTTP/1.1\r\nHost: {up.host('beta')}\r\n\r\n".encode())
        after = await asyncio.wait_for(
            attacker.request(f"GET /after HTTP/1.1\r\nHost: {up.host(target)}\r\n\r\n".encode()), 30
        )
        await attacker.close()
        await victim.close()
        assert first.status == 200, (target, first)
        assert first.body.startswith(b"GET /sleep HTTP/1.1"), (target, first.body)
        assert first.body.endswith(f"rev {target}-00001".encode())
        assert (second.status, second.body) == (200, b"/mine rev beta-00001"), target
        assert (after.status, after.body) == (200, f"/after rev {target}-00001".encode()), target
