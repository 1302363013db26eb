"""Eventing through `serving up`: a PingSource feeding a Broker whose Trigger wakes a Service from zero;
filters, replies and dead letters; overload answered by retries; and a Broker whose process is killed with
10,000 accepted events undelivered, then again mid-delivery, losing none of them.

The subscriber is a real Service (a threaded stdlib app) reached through the router and, at zero, the
activator; it appends one line per event it receives to a file the test reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.integration.conftest import ServingUp, eventually
from tests.records import json_lines

pytestmark = pytest.mark.eventing
Start = Callable[..., Awaitable[ServingUp]]
ZERO = ["--autoscaler-config", "allow-zero-initial-scale=true"]

SINK = '''"""Records each CloudEvent as one JSON line in $EVENTS; `ce-behave` asks for a reply, or a failure
at /fail."""
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
OUT = open(os.environ["EVENTS"], "a", buffering=1)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        behave = headers.get("ce-behave", "")
        time.sleep(float(os.environ.get("DELAY", "0")) + (2.0 if behave == "slow" else 0.0))
        crashed = os.path.join(os.path.dirname(os.environ["EVENTS"]), "crashed-" + headers.get("ce-id", ""))
        if behave == "crash" and not os.path.exists(crashed):
            open(crashed, "w").close()
            os._exit(1)  # the pod dies in the middle of the delivery, before answering
        record = {"path": self.path, "body": body.decode(errors="replace"), "pid": os.getpid(),
                  **{k[3:]: v for k, v in headers.items() if k.startswith("ce-")}}
        with LOCK:
            OUT.write(json.dumps(record) + "\\n")
        if behave == "fail" and self.path == "/fail":
            self.answer(500, b"always failing")
        elif behave == "reply":
            self.answer(200, b'{"answer": 42}', {
                "ce-specversion": "1.0", "ce-id": "reply-" + headers["ce-id"], "ce-source": "/sink",
                "ce-type": "answer", "Content-Type": "application/json"})
        else:
            self.answer(202, b"")

    def answer(self, status, body, headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True


Server(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''


def sink_service(folder: Path, name: str = "sink", annotations: str = "", env: str = "", cc: int = 0) -> str:
    (folder / "sink.py").write_text(SINK)
    return f"""\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/initial-scale: "0"{annotations}
    spec:
      containerConcurrency: {cc}
      containers:
        - command: ["{sys.executable}", "sink.py"]
          env:
            - name: EVENTS
              value: "{folder / "events.jsonl"}"{env}
"""


BROKER = """\
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
"""


def trigger(
    name: str, subscriber: str, *, filters: str = "", delivery: str = "", service: str = "sink"
) -> str:
    return f"""\
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: {name}
spec:
  broker: default{filters}
  subscriber:
    ref:
      apiVersion: serving.knative.dev/v1
      kind: Service
      name: {service}
    uri: {subscriber}{delivery}
"""


def received(folder: Path) -> list[dict[str, str]]:
    return json_lines(folder / "events.jsonl")


def broker_host(up: ServingUp) -> str:
    return f"broker-ingress.localhost:{up.port}"


async def post_event(
    session: aiohttp.ClientSession,
    up: ServingUp,
    type_: str,
    *,
    id_: str | None = None,
    path: str = "/default/default",
    **ext: str,
) -> int:
    headers = {
        "Host": broker_host(up),
        "ce-specversion": "1.0",
        "ce-id": id_ or uuid.uuid4().hex,
        "ce-source": "/test",
        "ce-type": type_,
        "Content-Type": "text/plain",
        **{f"ce-{k}": v for k, v in ext.items()},
    }
    async with session.post(up.url(path), data=b"payload", headers=headers) as resp:
        await resp.read()
        return resp.status


@pytest.mark.timeout(150)
async def test_ping_source_wakes_a_service_at_zero_through_a_broker(
    tmp_path: Path, serving_up: Start
) -> None:
    yaml = tmp_path / "eventing.yaml"
    yaml.write_text(
        sink_service(tmp_path)
        + BROKER
        + trigger(
            "pings", "/ping", filters="\n  filter:\n    attributes:\n      type: dev.knative.sources.ping"
        )
        + """\
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata:
  name: every-minute
spec:
  schedule: "* * * * *"
  contentType: application/json
  data: '{"message": "Hello world!"}'
  sink:
    ref:
      apiVersion: eventing.knative.dev/v1
      kind: Broker
      name: default
"""
    )
    up = await serving_up([yaml], ZERO)
    await up.wait_revision("sink-00001", lambda r: r["desired_pods"] == 0, 30, "the sink starts at zero")

    async def delivered() -> bool:
        return any(e["path"] == "/ping" for e in received(tmp_path))

    await eventually(delivered, 75, "a ping event reached the sink (it fires at each minute's start)")
    event = next(e for e in received(tmp_path) if e["path"] == "/ping")
    assert event["type"] == "dev.knative.sources.ping"
    assert event["source"] == "/apis/v1/namespaces/default/pingsources/every-minute"
    assert json.loads(event["body"]) == {"message": "Hello world!"}

    async def counted() -> bool:
        # The status shows the component's counts as of its last scrape (every second).
        eventing = (await up.status())["eventing"]
        sources = {s["name"]: s for s in eventing["sources"]}
        triggers = {t["name"]: t for t in eventing["triggers"]}
        return (sources["every-minute"]["sent"] or 0) >= 1 and (triggers["pings"]["delivered"] or 0) >= 1

    await eventually(counted, 10, "serving status counts the PingSource's send and the Trigger's delivery")


async def test_filters_replies_and_dead_letters(tmp_path: Path, serving_up: Start) -> None:
    dead = """
  delivery:
    retry: 2
    backoffPolicy: linear
    backoffDelay: PT0.1S
    deadLetterSink:
      ref:
        apiVersion: serving.knative.dev/v1
        kind: Service
        name: sink
      uri: /dead"""
    yaml = tmp_path / "eventing.yaml"
    yaml.write_text(
        sink_service(tmp_path)
        + BROKER
        + trigger("exact", "/a", filters="\n  filter:\n    attributes:\n      type: a")
        + trigger("prefix", "/b", filters="\n  filters:\n    - prefix:\n        type: b.")
        + trigger("asks", "/ask", filters="\n  filter:\n    attributes:\n      type: ask")
        + trigger("answers", "/answer", filters="\n  filter:\n    attributes:\n      type: answer")
        + trigger(
            "doomed", "/fail", filters="\n  filter:\n    attributes:\n      type: doomed", delivery=dead
        )
    )
    up = await serving_up([yaml], ZERO)
    async with aiohttp.ClientSession() as session:
        statuses = [await post_event(session, up, "a", id_=f"a{i}") for i in range(3)]
        statuses += [await post_event(session, up, "b.x", id_=f"b{i}") for i in range(2)]
        statuses += [await post_event(session, up, "ask", id_="q1", behave="reply")]
        statuses += [await post_event(session, up, "doomed", id_="d1", behave="fail")]
        statuses += [await post_event(session, up, "nobody-wants-this", id_="n1")]
        assert statuses == [202] * 8
        assert await post_event(session, up, "a", path="/default/missing") == 404
        async with session.post(
            up.url("/default/default"), data=b"{}", headers={"Host": broker_host(up)}
        ) as resp:
            assert resp.status == 400
            assert "not a CloudEvent" in await resp.text()

    def paths() -> dict[str, list[str]]:
        by_path: dict[str, list[str]] = {}
        for e in received(tmp_path):
            by_path.setdefault(e["path"], []).append(e["id"])
        return by_path

    async def settled() -> bool:
        got = paths()
        return (
            len(got.get("/fail", [])) == 3
            and "/dead" in got
            and "/answer" in got
            and len(got.get("/a", [])) == 3
        )

    await eventually(settled, 40, f"every event delivered: {paths()}")
    got = paths()
    assert sorted(got["/a"]) == ["a0", "a1", "a2"]
    assert sorted(got["/b"]) == ["b0", "b1"]
    assert got["/ask"] == ["q1"]
    assert got["/answer"] == ["reply-q1"]
    assert got["/fail"] == ["d1", "d1", "d1"]  # the first attempt and two retries
    assert got["/dead"] == ["d1"]
    letter = next(e for e in received(tmp_path) if e["path"] == "/dead")
    assert letter["knativeerrorcode"] == "500"
    assert letter["knativeerrordest"].endswith("/fail")
    assert set(got) == {"/a", "/b", "/ask", "/answer", "/fail", "/dead"}  # nothing reached a wrong Trigger

    async def counted() -> bool:
        triggers = {t["name"]: t for t in (await up.status())["eventing"]["triggers"]}
        return bool(triggers["doomed"]["dead_lettered"] == 1 and triggers["exact"]["delivered"] == 3)

    await eventually(counted, 10, "serving status counts deliveries and dead letters")


async def test_overload_is_retried_until_delivered(tmp_path: Path, serving_up: Start) -> None:
    """One pod taking one request at a time (max-scale 1): the activator refuses what cannot wait (503);
    every event still arrives, with `retry: 0`."""
    annotations = '\n        autoscaling.knative.dev/max-scale: "1"'
    env = '\n            - name: DELAY\n              value: "0.05"'
    yaml = tmp_path / "eventing.yaml"
    yaml.write_text(
        sink_service(tmp_path, annotations=annotations, env=env, cc=1) + BROKER + trigger("all", "/all")
    )
    up = await serving_up([yaml], ZERO)
    async with aiohttp.ClientSession() as session:
        assert await post_event(session, up, "t", id_="first") == 202

        async def woken() -> bool:
            return len(received(tmp_path)) == 1

        await eventually(woken, 30, "the first event woke the revision")  # now at max-scale: 1 pod, 1 slot
        statuses = await asyncio.gather(*(post_event(session, up, "t", id_=f"e{i}") for i in range(59)))
    assert set(statuses) == {202}

    async def all_there() -> bool:
        return len({e["id"] for e in received(tmp_path)}) == 60

    await eventually(all_there, 60, "all 60 events delivered through the overloaded revision")

    async def counted() -> bool:
        trigger_status = (await up.status())["eventing"]["triggers"][0]
        counts.update(trigger_status)
        return bool(trigger_status["delivered"] == 60 and trigger_status["dropped"] == 0)

    counts: dict[str, int] = {}
    await eventually(counted, 10, "serving status counts 60 delivered, none dropped")
    assert counts["retried"] > 0  # the revision did refuse some: the retries delivered them


async def test_broker_killed_loses_no_accepted_event(tmp_path: Path, serving_up: Start) -> None:
    """10,000 events accepted while the Trigger's Service does not exist yet (they wait in the log); the
    eventing process is killed with SIGKILL, the Service is applied, and the process is killed again in the
    middle of delivery: every accepted event arrives at least once."""
    yaml = tmp_path / "eventing.yaml"
    yaml.write_text(BROKER.removeprefix("---\n") + trigger("all", "/all"))
    up = await serving_up([yaml], ZERO)
    total = 10_000
    accepted: list[str] = []
    connector = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(connector=connector) as session:
        ids = iter(range(total))

        async def producer() -> None:
            for i in ids:
                if await post_event(session, up, "t", id_=f"e{i}") == 202:
                    accepted.append(f"e{i}")

        await asyncio.gather(*(producer() for _ in range(50)))
    assert len(accepted) == total

    async def eventing_pid() -> int:
        return int((await up.status())["components"]["eventing"]["pid"])

    os.kill(await eventing_pid(), signal.SIGKILL)
    service = tmp_path / "sink.yaml"
    service.write_text(sink_service(tmp_path))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controller.cli", "apply", "-f", str(service), cwd=tmp_path
    )
    assert await proc.wait() == 0

    async def some() -> bool:
        return len(received(tmp_path)) >= total // 3

    await eventually(some, 120, "deliveries started after the restart")
    os.kill(await eventing_pid(), signal.SIGKILL)

    async def everything() -> bool:
        return {e["id"] for e in received(tmp_path)} >= set(accepted)

    await eventually(everything, 180, "every accepted event delivered after two kills", interval=0.5)
    counts = Counter(e["id"] for e in received(tmp_path))
    duplicates = sum(n - 1 for n in counts.values())
    print(f"delivered {len(counts)} distinct events of {total} accepted; {duplicates} duplicate deliveries")
    assert len(counts) == total


HEARTBEATS = '''"""A ContainerSource's program: an event to $K_SINK every 0.2 s, $K_CE_OVERRIDES applied."""
import json
import os
import time
import urllib.request
import uuid

overrides = json.loads(os.environ.get("K_CE_OVERRIDES") or "{}").get("extensions", {})
while True:
    headers = {"ce-specversion": "1.0", "ce-id": uuid.uuid4().hex, "ce-source": "heartbeats",
               "ce-type": "heartbeat", "Content-Type": "application/json"}
    headers.update({"ce-" + k: v for k, v in overrides.items()})
    request = urllib.request.Request(os.environ["K_SINK"], data=b'{"beat": 1}', headers=headers)
    try:
        urllib.request.urlopen(request, timeout=5).read()
    except OSError as exc:
        print("post failed:", exc, flush=True)
    time.sleep(0.2)
'''

EMITTER = '''"""A Service bound by a SinkBinding: a GET posts an event to $K_SINK and answers its status."""
import os
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        headers = {"ce-specversion": "1.0", "ce-id": uuid.uuid4().hex, "ce-source": "emitter",
                   "ce-type": "emitted", "Content-Type": "text/plain"}
        request = urllib.request.Request(os.environ["K_SINK"], data=b"from emitter", headers=headers)
        status = urllib.request.urlopen(request, timeout=5).status
        body = f"{status} {os.environ['K_SINK']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''


async def test_container_source_and_sink_binding(tmp_path: Path, serving_up: Start) -> None:
    """A ContainerSource's process gets K_SINK (the Broker) and K_CE_OVERRIDES; a Service bound by a
    SinkBinding gets K_SINK too; both their events reach the sink through the Broker."""
    (tmp_path / "heartbeats.py").write_text(HEARTBEATS)
    (tmp_path / "emitter.py").write_text(EMITTER)
    broker_ref = (
        "\n    ref:\n      apiVersion: eventing.knative.dev/v1\n      kind: Broker\n      name: default"
    )
    yaml = tmp_path / "eventing.yaml"
    yaml.write_text(
        sink_service(tmp_path)
        + BROKER
        + trigger("beats", "/beats", filters="\n  filter:\n    attributes:\n      type: heartbeat")
        + trigger("emitted", "/emitted", filters="\n  filter:\n    attributes:\n      type: emitted")
        + f"""\
---
apiVersion: sources.knative.dev/v1
kind: ContainerSource
metadata:
  name: heartbeats
spec:
  template:
    spec:
      containers:
        - image: example/heartbeats
          command: ["{sys.executable}", "heartbeats.py"]
  ceOverrides:
    extensions:
      team: blue
  sink:{broker_ref}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: emitter
spec:
  template:
    spec:
      containers:
        - image: example/emitter
          command: ["{sys.executable}", "emitter.py"]
---
apiVersion: sources.knative.dev/v1
kind: SinkBinding
metadata:
  name: bind-emitter
spec:
  subject:
    apiVersion: serving.knative.dev/v1
    kind: Service
    name: emitter
  sink:{broker_ref}
"""
    )
    up = await serving_up([yaml], ZERO)

    async def beat() -> bool:
        return any(e["path"] == "/beats" for e in received(tmp_path))

    await eventually(beat, 30, "a heartbeat reached the sink")
    heartbeat = next(e for e in received(tmp_path) if e["path"] == "/beats")
    assert heartbeat["team"] == "blue"  # K_CE_OVERRIDES
    status, text = await up.get("emitter")
    assert status == 200
    code, sink = text.split()
    assert code == "202"
    assert sink.startswith("http://127.0.0.1:")  # the Broker's address inside the platform
    assert sink.endswith("/default/default")
    brokers = (await up.status())["eventing"]["brokers"]
    assert [b["address"] for b in brokers] == [sink]  # serving status shows the address K_SINK carries

    async def emitted() -> bool:
        return any(e["path"] == "/emitted" for e in received(tmp_path))

    await eventually(emitted, 30, "the bound Service's event reached the sink")
    sources = {s["name"]: s for s in (await up.status())["eventing"]["sources"]}
    assert sources["heartbeats"]["pid"] is not None
    assert sources["bind-emitter"]["sink"] == sink


async def test_github_webhook_source(tmp_path: Path, serving_up: Start) -> None:
    """Signed GitHub deliveries become CloudEvents in the Broker; an unsigned or mis-signed one is refused
    and delivers nothing."""
    secret = b"webhook-secret-value"
    yaml = tmp_path / "eventing.yaml"
    yaml.write_text(
        sink_service(tmp_path)
        + BROKER
        + trigger(
            "pushes",
            "/push",
            filters="\n  filter:\n    attributes:\n      type: dev.knative.source.github.push",
        )
        + f"""\
---
apiVersion: v1
kind: Secret
metadata:
  name: github
stringData:
  secretToken: {secret.decode()}
---
apiVersion: sources.knative.dev/v1alpha1
kind: GitHubSource
metadata:
  name: repo
spec:
  ownerAndRepository: example/hello
  eventTypes: [push]
  secretToken:
    secretKeyRef:
      name: github
      key: secretToken
  sink:
    ref:
      apiVersion: eventing.knative.dev/v1
      kind: Broker
      name: default
"""
    )
    up = await serving_up([yaml], ZERO)
    body = json.dumps(
        {"ref": "refs/heads/main", "compare": "https://github.com/example/hello/compare/a...b"}
    ).encode()

    async def deliver(signature: str | None, delivery: str) -> tuple[int, str]:
        headers = {
            "Host": f"webhook.localhost:{up.port}",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "Content-Type": "application/json",
        }
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature
        async with (
            aiohttp.ClientSession() as session,
            session.post(up.url("/default/repo"), data=body, headers=headers) as resp,
        ):
            return resp.status, await resp.text()

    good = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    assert (await deliver(None, "d-unsigned"))[0] == 401
    assert (await deliver("sha256=" + "0" * 64, "d-forged"))[0] == 403
    status, text = await deliver(good, "d-good")
    assert status == 202, text

    async def arrived() -> bool:
        return any(e["path"] == "/push" for e in received(tmp_path))

    await eventually(arrived, 30, "the push event reached the sink")
    events = [e for e in received(tmp_path) if e["path"] == "/push"]
    assert [e["id"] for e in events] == ["d-good"]
    assert events[0]["type"] == "dev.knative.source.github.push"
    assert events[0]["source"] == "https://github.com/example/hello"
    assert json.loads(events[0]["body"]) == json.loads(body)


async def test_a_subscriber_that_crashes_or_is_slow_loses_nothing(tmp_path: Path, serving_up: Start) -> None:
    """The sink's process dies in the middle of two deliveries (its pod restarts) and takes 2 s over
    others: every event arrives, each at its own Trigger only."""
    retry = "\n  delivery:\n    retry: 6\n    backoffDelay: PT0.5S\n    timeout: PT10S"
    yaml = tmp_path / "eventing.yaml"
    yaml.write_text(
        sink_service(tmp_path)
        + BROKER
        + trigger(
            "crashy", "/crash", filters="\n  filter:\n    attributes:\n      type: crash", delivery=retry
        )
        + trigger("slow", "/slow", filters="\n  filter:\n    attributes:\n      type: slow", delivery=retry)
    )
    up = await serving_up([yaml], ZERO)
    async with aiohttp.ClientSession() as session:
        for i in range(2):
            assert await post_event(session, up, "crash", id_=f"c{i}", behave="crash") == 202
        for i in range(3):
            assert await post_event(session, up, "slow", id_=f"s{i}", behave="slow") == 202

    def ids(path: str) -> set[str]:
        return {e["id"] for e in received(tmp_path) if e["path"] == path}

    async def all_there() -> bool:
        return ids("/crash") == {"c0", "c1"} and ids("/slow") == {"s0", "s1", "s2"}

    await eventually(all_there, 90, "every event delivered despite the crashes and the slowness")
    assert (tmp_path / "crashed-c0").exists()  # the crash did happen
    assert {e["path"] for e in received(tmp_path)} == {"/crash", "/slow"}
