"""The Broker ingress on the forwarding engine: a real server on 127.0.0.1 in front of a real event store,
spoken to over raw sockets (HTTP/1.1) and an h2c client, so that every answer and its framing is what a
producer sees."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from eventing.cloudevent import MAX_EVENT_BYTES
from eventing.delivery import Deliverer
from eventing.event import Event
from eventing.ingress import Answer, Incoming, Ingress
from eventing.metrics import EventingMetrics
from eventing.registry import Registry
from eventing.session import client_session
from eventing.store import EventStore, StoreSubscription
from serving.contract.eventing import BrokerSpec, EventingSpec
from serving.events import KAFKA_CLASS
from serving.http import Server, serve
from tests.unit.serving.http.rawh2 import H2Peer

BROKER = ("default", "default")
HOST = "broker-ingress.localhost"
CE = {"ce-specversion": "1.0", "ce-source": "/test", "ce-type": "t.test"}


@dataclass
class Setup:
    server: Server
    store: EventStore
    subscription: StoreSubscription
    metrics: CollectorRegistry
    hooks: list[tuple[str, str, str, bytes | None]]

    @property
    def port(self) -> int:
        return self.server.port

    async def stored(self, count: int) -> list[str]:
        """The ids of the next `count` events in the Broker's log (fails if they are not there within 2 s)."""
        ids: list[str] = []
        while len(ids) < count:
            records = await asyncio.wait_for(self.subscription.fetch(count - len(ids)), 2)
            ids += [record.event.id for record in records]
        return ids

    def counted(self, outcome: str) -> float:
        value = self.metrics.get_sample_value(
            "eventing_broker_events_total",
            {"namespace": BROKER[0], "broker": BROKER[1], "result": outcome},
        )
        return value or 0.0


@pytest.fixture
async def ingress(tmp_path: Path) -> AsyncIterator[Setup]:
    store = EventStore(tmp_path)
    await store.start()
    prometheus = CollectorRegistry()
    metrics = EventingMetrics(prometheus)
    hooks: list[tuple[str, str, str, bytes | None]] = []

    async def webhook(request: Incoming) -> Answer:
        body = await request.read(16)
        hooks.append((request.method, request.namespace, request.name, body))
        return Answer(202 if body is not None else 413, "hook")

    async with client_session() as session:
        deliverer = Deliverer(session)
        registry = Registry(store, deliverer, metrics)
        not_ready = BrokerSpec("default", "kafka", KAFKA_CLASS, ready=False)
        await registry.apply(EventingSpec(brokers=(BrokerSpec(*BROKER, "MTChannelBasedBroker"), not_ready)))
        subscription = await store.subscribe(BROKER, ("default", "reader"))
        server = await serve(Ingress(registry, metrics, webhook), "127.0.0.1", 0)
        try:
            yield Setup(server, store, subscription, prometheus, hooks)
        finally:
            await server.drain(1.0)
            await registry.close()
            deliverer.close()


def post(path: str, headers: dict[str, str], body: bytes, *, host: str = HOST, method: str = "POST") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode() + b"\r\n" + body


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Response(status, headers, body)


async def exchange(port: int, request: bytes) -> Response:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await read_response(reader)
    finally:
        writer.close()


async def test_binary_and_structured_events_are_stored_then_answered_202(ingress: Setup) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
    structured = json.dumps({"specversion": "1.0", "id": "s1", "source": "/s", "type": "t", "data": {"a": 1}})
    # Three events pipelined on one kept-alive connection, answered in order.
    writer.write(
        post("/default/default", {**CE, "ce-id": "b1", "Content-Type": "application/json"}, b'{"n":1}')
        + post("/default/default", {"Content-Type": "application/cloudevents+json"}, structured.encode())
        + post("/default/default?ignored=1", {**CE, "ce-id": "b2"}, b"")
    )
    answers = [await read_response(reader) for _ in range(3)]
    writer.close()
    assert [a.status for a in answers] == [202, 202, 202]
    assert all(a.body == b"" and "connection" not in a.headers for a in answers)
    assert await ingress.stored(3) == ["b1", "s1", "b2"]
    assert ingress.counted("accepted") == 3


@pytest.mark.parametrize(
    ("request_bytes", "status", "says"),
    [
        pytest.param(post("/default/default", {"ce-id": "x"}, b"{}"), 400, "not a CloudEvent", id="no-ce"),
        pytest.param(
            post("/default/default", {**CE, "ce-id": "x", "ce-time": "yesterday"}, b""),
            400,
            "time",
            id="bad-time",
        ),
        pytest.param(
            post("/default/default", {"Content-Type": "application/cloudevents+json"}, b"{nope"),
            400,
            "not JSON",
            id="bad-json",
        ),
        pytest.param(post("/default/missing", {**CE, "ce-id": "x"}, b""), 404, "not found", id="unknown"),
        pytest.param(post("/default", {**CE, "ce-id": "x"}, b""), 404, "/{namespace}/{broker}", id="short"),
        pytest.param(post("/a/b/c", {**CE, "ce-id": "x"}, b""), 404, "/{namespace}/{broker}", id="long"),
        pytest.param(post("/default/default", {}, b"", method="GET"), 405, "POST", id="get"),
        pytest.param(post("/default/kafka", {**CE, "ce-id": "x"}, b""), 503, "not ready", id="not-ready"),
    ],
)
async def test_bad_requests_get_the_right_answer_and_store_nothing(
    ingress: Setup, request_bytes: bytes, status: int, says: str
) -> None:
    answer = await exchange(ingress.port, request_bytes)
    assert answer.status == status
    assert says in answer.body.decode()
    assert answer.headers["content-type"].startswith("text/plain")
    if status == 405:
        assert answer.headers["allow"] == "POST"
    if status == 503:
        assert answer.headers["retry-after"] == "1"
    assert ingress.store.published == 0


async def test_an_oversized_event_gets_413_and_is_not_buffered(ingress: Setup) -> None:
    # Announced by Content-Length: refused before a byte of the body is read.
    big = b"x" * (MAX_EVENT_BYTES + 1)
    answer = await exchange(ingress.port, post("/default/default", {**CE, "ce-id": "x"}, big))
    assert answer.status == 413
    assert answer.headers["connection"] == "close"
    # Chunked, so only counting tells: refused once the limit is passed, while the client is still sending.
    reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
    head = "POST /default/default HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{n}: {v}\r\n" for n, v in {**CE, "ce-id": "y"}.items()) + "\r\n"
    writer.write(head.encode())
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"y" * 64 * 1024)
    for _ in range(MAX_EVENT_BYTES // (64 * 1024) + 1):
        writer.write(chunk)
    answer = await read_response(reader)
    writer.close()
    assert answer.status == 413
    assert ingress.counted("rejected") == 2
    assert ingress.store.published == 0


async def test_a_client_that_expects_100_continue_gets_it_then_its_202(ingress: Setup) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
    body = b'{"big": "enough for curl to ask"}'
    request = post("/default/default", {**CE, "ce-id": "c1", "Expect": "100-continue"}, b"")
    writer.write(request.replace(b"Content-Length: 0", b"Content-Length: %d" % len(body)))
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(body)
    answer = await read_response(reader)
    writer.close()
    assert answer.status == 202
    assert await ingress.stored(1) == ["c1"]


async def test_events_over_http2_on_the_same_port(ingress: Setup) -> None:
    peer = await H2Peer.connect(ingress.port)
    try:
        first, second = await asyncio.gather(
            peer.fetch(
                "/default/default",
                method="POST",
                body=b'{"n":1}',
                extra=[*((n, v) for n, v in CE.items()), ("ce-id", "h1")],
            ),
            peer.fetch("/default/default", method="POST", body=b"", extra=[("ce-id", "h2")]),
        )
    finally:
        await peer.close()
    assert first.status == 202
    assert second.status == 400  # no ce-specversion: not a CloudEvent
    assert await ingress.stored(1) == ["h1"]


async def test_webhook_hosts_go_to_the_webhook_receiver(ingress: Setup) -> None:
    answer = await exchange(ingress.port, post("/ns/hook", {}, b"payload", host="webhook.localhost:8080"))
    assert (answer.status, answer.body) == (202, b"hook\n")
    answer = await exchange(ingress.port, post("/ns/hook", {}, b"x" * 17, host="webhook.example.com"))
    assert answer.status == 413
    assert ingress.hooks == [("POST", "ns", "hook", b"payload"), ("POST", "ns", "hook", None)]
    assert ingress.store.published == 0


class HeldStore(EventStore):
    """The real store, whose writes wait until the test lets them go: in `publish` (`fast=False`: the open
    log's path without a task is refused, so the ingress goes through a publishing task), or in the
    executor thread that writes a batch (`fast=True`: the ingress awaits the batch's future)."""

    def __init__(self, root: Path, *, fast: bool) -> None:
        super().__init__(root)
        self.fast = fast
        self.entered = asyncio.Event()
        self.executor = _HeldWrites(self)
        self.release: asyncio.Event = _Released(self.executor.go)

    def submit(self, broker: tuple[str, str], events: list[Event]) -> asyncio.Future[None] | None:
        return super().submit(broker, events) if self.fast else None

    async def publish(self, broker: tuple[str, str], events: list[Event]) -> None:
        self.entered.set()
        await self.release.wait()
        await super().publish(broker, events)


class _HeldWrites(ThreadPoolExecutor):
    """A held store's executor: with `fast`, a batch's write waits in its thread for the release."""

    def __init__(self, store: HeldStore) -> None:
        super().__init__(4)
        self._store = store
        self._loop = asyncio.get_running_loop()
        self.go = threading.Event()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if not self._store.fast or not args or not isinstance(args[-1], bytes):
            return super().submit(fn, *args, **kwargs)  # not a batch (a position file, a folder)

        def held() -> Any:
            self._loop.call_soon_threadsafe(self._store.entered.set)
            self.go.wait(5)
            return fn(*args, **kwargs)

        return super().submit(held)


class _Released(asyncio.Event):
    """A held store's release, seen by its writing thread too."""

    def __init__(self, go: threading.Event) -> None:
        super().__init__()
        self._go = go

    def set(self) -> None:
        self._go.set()
        super().set()


@pytest.mark.parametrize("fast", [False, True], ids=["publishing-task", "open-log-future"])
async def test_an_event_whose_producer_went_away_mid_write_is_stored_and_counted(
    tmp_path: Path, fast: bool
) -> None:
    store = HeldStore(tmp_path, fast=fast)
    await store.start()
    metrics = EventingMetrics(CollectorRegistry())
    async with client_session() as session:
        deliverer = Deliverer(session)
        registry = Registry(store, deliverer, metrics)
        await registry.apply(EventingSpec(brokers=(BrokerSpec(*BROKER, "MTChannelBasedBroker"),)))
        subscription = await store.subscribe(BROKER, ("default", "reader"))
        server = await serve(Ingress(registry, metrics), "127.0.0.1", 0)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(post("/default/default", {**CE, "ce-id": "gone"}, b"{}"))
            await asyncio.wait_for(store.entered.wait(), 5)
            writer.transport.abort()  # the producer resets its connection while the event is being written
            await asyncio.sleep(0.05)
            store.release.set()
            records = await asyncio.wait_for(subscription.fetch(1), 5)
            assert [r.event.id for r in records] == ["gone"]
            for _ in range(100):
                if registry.accepted.get(BROKER) == 1:
                    break
                await asyncio.sleep(0.01)
            assert registry.accepted.get(BROKER) == 1
        finally:
            await server.drain(1.0)
            await registry.close()
            deliverer.close()
