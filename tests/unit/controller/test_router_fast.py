"""The router's fast path (`Router.fast`): which requests take it, and that every way one of them can fail
ends as it ends in the handler task: a stale pooled connection retried, a pod whose app refused left to the
activator, an activator that hung up replaced by a ready pod for an idempotent request, a platform host that
failed answered 503, a client that left releasing what the request counted. The upstreams are raw HTTP/1.1
servers on 127.0.0.1 that answer each request as their script says."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest

from controller.ingress.router import Router
from controller.local.store import Store
from controller.reconcile.routetable import HostRoute, RouteTable, Split
from serving.http import Exchange, Server, serve
from serving.platform import Revision, RevisionKey
from tests.unit.controller.test_router import KEY, pod, status

HOST = "hello.default.localhost"
CLOSE = "close"
"""Hang up after reading the request, answering nothing."""
HANG = "hang"
"""Never answer."""
HALF = "half"
"""Send part of a response head, then hang up."""

Action = bytes | str


def ok(name: str, *fields: str) -> bytes:
    body = name.encode()
    head = "".join(f"{field}\r\n" for field in fields)
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), head.encode(), body)


REFUSED = b"HTTP/1.1 502 Bad Gateway\r\nk-app-refused: 1\r\ncontent-length: 0\r\n\r\n"
"""The queue-proxy's answer when its app refused the connection."""


class Scripted:
    """A raw HTTP/1.1 upstream: the n-th request it reads (over all connections) gets `script(n)`."""

    def __init__(self, script: Callable[[int], Action]) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                action = self.script(len(self.requests))
                self.requests.append(head)
                if action == CLOSE:
                    return
                if action == HANG:
                    await reader.read()  # until the router hangs up
                    return
                if action == HALF:
                    writer.write(b"HTTP/1.1 200 OK\r\n")
                    await writer.drain()
                    return
                assert isinstance(action, bytes)
                writer.write(action)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()


def always(action: Action) -> Callable[[int], Action]:
    return lambda n: action


def then(first: Action, *rest: Action, after: Action) -> Callable[[int], Action]:
    """`first`, then each of `rest` in turn, then `after` for every further request."""
    actions = [first, *rest]
    return lambda n: actions[n] if n < len(actions) else after


@dataclass
class Rig:
    store: Store
    router: Router
    server: Server
    activator: Scripted
    taken: list[bool]
    """What the fast path said to each request, in order: True when it took it."""

    @property
    def port(self) -> int:
        return self.server.port

    def serve_mode(self, *upstreams: Scripted, mode: str = "Serve") -> None:
        self.store.set_pods(KEY, tuple(pod(upstream.port) for upstream in upstreams))
        self.store.set_status(KEY, status(mode))


MakeRig = Callable[[Callable[[int], Action]], Awaitable[Rig]]
"""Starts a router whose activator answers as its script says."""


@pytest.fixture
async def make_rig() -> AsyncIterator[MakeRig]:
    started: list[tuple[Rig, list[Scripted]]] = []

    async def make(activator_script: Callable[[int], Action]) -> Rig:
        activator = Scripted(activator_script)
        await activator.start()
        store = Store()
        store.put_revision(Revision(key=KEY, service="hello", configuration="hello"))
        router = Router(store, activator.port, ingress_port=8080, rng=random.Random(7))
        split = (Split(KEY, 100),)
        router.set_table(RouteTable([HostRoute("default", "hello", HOST, None, split)]))
        taken: list[bool] = []

        def fast(ex: Exchange) -> bool:
            took = router.fast(ex)
            taken.append(took)
            return took

        server = await serve(router.handle, "127.0.0.1", 0, fast=fast)
        rig = Rig(store, router, server, activator, taken)
        started.append((rig, [activator]))
        return rig

    yield make
    for rig, upstreams in started:
        rig.server.close()
        await rig.router.close()
        for upstream in upstreams:
            await upstream.stop()


async def upstream(script: Callable[[int], Action]) -> Scripted:
    started = Scripted(script)
    await started.start()
    return started


async def requests(
    rig: Rig, count: int, *, method: str = "GET", host: str = HOST
) -> list[tuple[int, str, dict[str, str]]]:
    """`count` requests, one after another on one keep-alive client connection."""
    answers = []
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(count):
            url = f"http://127.0.0.1:{rig.port}/x"
            async with session.request(method, url, headers={"Host": host}) as resp:
                answers.append((resp.status, await resp.text(), dict(resp.headers)))
    return answers


async def settle(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)
    assert check()


@pytest.mark.parametrize("mode", ["Serve", "Proxy"])
async def test_requests_after_the_first_take_the_fast_path(make_rig: MakeRig, mode: str) -> None:
    """The first request makes the pool's connection in the task; the rest go from the read that completed
    them, to the pod (Serve) or to the activator naming the revision (Proxy), with the ingress's headers."""
    rig = await make_rig(always(ok("activator")))
    app = await upstream(always(ok("pod")))
    rig.serve_mode(app, mode=mode)
    answers = await requests(rig, 4)
    expected = "pod" if mode == "Serve" else "activator"
    assert [(code, text) for code, text, _ in answers] == [(200, expected)] * 4
    assert rig.taken == [False, True, True, True]
    seen = app.requests if mode == "Serve" else rig.activator.requests
    assert len(seen) == 4
    for head in seen:
        assert b"\r\nx-forwarded-for: 127.0.0.1\r\n" in head
        assert (b"knative-serving-revision: hello-00001" in head) == (mode == "Proxy")
    traffic = rig.router.traffic[KEY]
    assert (traffic.requests, traffic.in_flight, traffic.via_activator, traffic.errors) == (4, 0, 0, 0)
    await app.stop()


@pytest.mark.parametrize("mode", ["Serve", "Proxy"])
async def test_a_stale_pooled_connection_is_retried_on_a_fresh_one(make_rig: MakeRig, mode: str) -> None:
    """The upstream closed the pooled connection as the request arrived (nothing was processed): the request
    is sent again, as the handler task's `forward` does."""
    stale = then(ok("first"), CLOSE, after=ok("again"))
    rig = await make_rig(stale if mode == "Proxy" else always(ok("activator")))
    app = await upstream(stale if mode == "Serve" else always(ok("pod")))
    rig.serve_mode(app, mode=mode)
    answers = await requests(rig, 2)
    assert [(code, text) for code, text, _ in answers] == [(200, "first"), (200, "again")]
    assert rig.taken == [False, True]
    traffic = rig.router.traffic[KEY]
    assert (traffic.in_flight, traffic.via_activator, traffic.errors) == (0, 0, 0)
    await app.stop()


async def test_a_pod_whose_app_refused_sends_the_request_through_the_activator(make_rig: MakeRig) -> None:
    rig = await make_rig(always(ok("activator")))
    app = await upstream(then(ok("pod"), after=REFUSED))
    rig.serve_mode(app)
    answers = await requests(rig, 3)
    assert [(code, text) for code, text, _ in answers] == [
        (200, "pod"),
        (200, "activator"),
        (200, "activator"),
    ]
    assert rig.taken[:2] == [False, True]
    assert all(b"knative-serving-revision: hello-00001" in head for head in rig.activator.requests)
    assert all(b"k-app-refused" not in head.lower() for head in rig.activator.requests)
    traffic = rig.router.traffic[KEY]
    assert (traffic.in_flight, traffic.via_activator, traffic.errors) == (0, 0, 0)
    await app.stop()


@pytest.mark.parametrize(("method", "expected"), [("GET", (200, "pod")), ("POST", (502, None))])
async def test_an_activator_failing_before_it_answers_sends_an_idempotent_request_to_a_ready_pod(
    make_rig: MakeRig, method: str, expected: tuple[int, str | None]
) -> None:
    rig = await make_rig(then(ok("activator"), after=HALF))
    app = await upstream(always(ok("pod")))
    rig.serve_mode(app, mode="Proxy")
    answers = await requests(rig, 2, method=method)
    assert rig.taken == [False, True]
    code, text, _ = answers[1]
    assert code == expected[0]
    if expected[1] is not None:
        assert text == expected[1]
        assert b"knative-serving-revision" not in app.requests[-1]
    else:
        assert "the activator failed the request" in text
        assert app.requests == []
    traffic = rig.router.traffic[KEY]
    assert (traffic.in_flight, traffic.via_activator) == (0, 0)
    assert traffic.direct_fallbacks == (1 if method == "GET" else 0)
    await app.stop()


async def raw_request_then_leave(rig: Rig, reached: Callable[[], bool]) -> None:
    """One request that completes, then one the client abandons once `reached` says it got upstream."""
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.port)
    request = f"GET /x HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    writer.write(request)
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(len("first"))
    writer.write(request)
    await settle(reached)
    writer.transport.abort()


@pytest.mark.parametrize("mode", ["Serve", "Proxy"])
async def test_a_client_leaving_mid_request_releases_what_it_counted(make_rig: MakeRig, mode: str) -> None:
    script = then(ok("first"), HANG, after=ok("later"))
    rig = await make_rig(script if mode == "Proxy" else always(ok("activator")))
    app = await upstream(script if mode == "Serve" else always(ok("pod")))
    rig.serve_mode(app, mode=mode)
    hanging = app if mode == "Serve" else rig.activator
    await raw_request_then_leave(rig, lambda: len(hanging.requests) == 2)
    traffic = rig.router.traffic[KEY]
    await settle(lambda: traffic.in_flight == 0)
    assert rig.taken == [False, True]
    assert traffic.via_activator == 0
    assert [(code, text) for code, text, _ in await requests(rig, 1)] == [(200, "later")]
    assert traffic.in_flight == 0
    await app.stop()


async def test_a_client_leaving_while_a_failed_fast_request_is_sent_again(make_rig: MakeRig) -> None:
    """The stale connection's retry runs in a task: the client leaving stops it too."""
    rig = await make_rig(then(ok("first"), CLOSE, HANG, after=ok("later")))
    app = await upstream(always(ok("pod")))
    rig.serve_mode(app, mode="Proxy")
    await raw_request_then_leave(rig, lambda: len(rig.activator.requests) == 3)
    traffic = rig.router.traffic[KEY]
    await settle(lambda: (traffic.in_flight, traffic.via_activator) == (0, 0))
    assert rig.taken == [False, True]
    assert [(code, text) for code, text, _ in await requests(rig, 1)] == [(200, "later")]
    await app.stop()


async def test_platform_hosts_take_the_fast_path_and_answer_503_when_theirs_fails(make_rig: MakeRig) -> None:
    rig = await make_rig(always(ok("activator")))
    platform = await upstream(then(ok("broker"), ok("broker"), after=HALF))
    rig.router.set_platform_hosts({"broker-ingress.localhost": ("127.0.0.1", platform.port)})
    answers = await requests(rig, 3, host="broker-ingress.localhost:8080")
    assert [(code, text) for code, text, _ in answers[:2]] == [(200, "broker"), (200, "broker")]
    code, text, headers = answers[2]
    assert code == 503
    assert "is not reachable" in text
    assert headers["Retry-After"] == "1"
    assert rig.taken == [False, True, True]
    assert all(b"x-forwarded-for: 127.0.0.1" in head for head in platform.requests)
    await platform.stop()


async def test_a_traffic_split_holds_when_the_fast_path_leaves_requests_to_the_task(
    make_rig: MakeRig,
) -> None:
    """One revision's pod closes every connection (its pool never has an idle one, so the fast path leaves
    its requests to the task): the task routes each to the revision the fast path picked, so the split is
    still 50/50 (picking again would send it three quarters of them to the other)."""
    rig = await make_rig(always(ok("activator")))
    other = RevisionKey("default", "hello-00002")
    rig.store.put_revision(Revision(key=other, service="hello", configuration="hello"))
    kept = await upstream(always(ok("kept")))
    closing = await upstream(always(ok("closing", "connection: close")))
    rig.serve_mode(kept)
    rig.store.set_pods(other, (pod(closing.port),))
    rig.store.set_status(other, status("Serve"))
    split = (Split(KEY, 50), Split(other, 50))
    rig.router.set_table(RouteTable([HostRoute("default", "hello", HOST, None, split)]))
    answers = await requests(rig, 400)
    closed = sum(1 for _, text, _ in answers if text == "closing")
    assert 160 <= closed <= 240, closed
    assert any(rig.taken)  # the kept revision's requests went the fast way
    assert not rig.taken[-1] or answers[-1][1] == "kept"
    await kept.stop()
    await closing.stop()
