from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.ingress.router import Router, sanitize
from controller.local.store import Store
from controller.reconcile.routetable import RouteTable, service_routes
from serving.http import (
    Exchange,
    Headers,
    Request,
    UpstreamConnectError,
    UpstreamError,
    serve,
)
from serving.platform import Pod, Revision, RevisionKey, ScalerStatus
from tests.fakes.exchange import FakeExchange
from tests.fakes.otlp import FakeCollector
from tests.unit.serving.http.rawh2 import H2Peer
from tests.unit.serving.test_tracer import close, tracer_for

KEY = RevisionKey("default", "hello-00001")


@dataclass(frozen=True)
class Target:
    revision: str
    percent: int
    tag: str | None = None


class Upstream:
    """A real HTTP server that names itself in its answers and keeps the request headers it saw."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[dict[str, str]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            self.seen.append({k.lower(): v for k, v in request.headers.items()})
            return web.Response(text=f"{self.name} {request.path_qs}")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def status(mode: str) -> ScalerStatus:
    return ScalerStatus(
        desired_pods=1,
        mode="Serve" if mode == "Serve" else "Proxy",
        stable_concurrency=0.0,
        panic_concurrency=0.0,
        panic=False,
        excess_burst_capacity=0.0,
        activators=1,
    )


def pod(port: int, ready: bool = True) -> Pod:
    return Pod(
        name=f"hello-00001-p{port}",
        host="127.0.0.1",
        port=port,
        stats_port=1,
        admin_port=2,
        ready=ready,
        started_at=0.0,
    )


class Rig:
    def __init__(self, store: Store, router: Router, port: int, activator: Upstream) -> None:
        self.store = store
        self.router = router
        self.port = port
        self.activator = activator

    async def get(self, host: str, path: str = "/x?y=1") -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.port}{path}", headers={"Host": host}) as resp,
        ):
            return resp.status, await resp.text()


@pytest.fixture(params=["fast-path", "handler-task"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    """The router serving on 127.0.0.1, with its fast path (requests after the first to a pod or the
    activator take it, once their pool has an idle connection) and without (every request in the task)."""
    activator = Upstream("activator")
    await activator.start()
    store = Store()
    store.put_revision(Revision(key=KEY, service="hello", configuration="hello"))
    router = Router(store, activator.port, ingress_port=8080)
    router.set_table(RouteTable(service_routes("default", "hello", [Target("hello-00001", 100)])))
    fast = router.fast if request.param == "fast-path" else None
    server = await serve(router.handle, "127.0.0.1", 0, fast=fast)
    yield Rig(store, router, server.sockets[0].getsockname()[1], activator)
    server.close()
    await router.close()
    await activator.stop()


async def test_unknown_host_gets_404_listing_known_hosts(rig: Rig) -> None:
    code, body = await rig.get("other.default.localhost:8080")
    assert code == 404
    assert "'other.default.localhost:8080'" in body
    assert "http://hello.default.localhost:8080" in body


async def test_proxy_mode_goes_through_the_activator_naming_the_revision(rig: Rig) -> None:
    rig.store.set_pods(KEY, (pod(closed_port()),))
    assert await rig.get("hello.default.localhost:8080") == (200, "activator /x?y=1")
    [headers] = rig.activator.seen
    assert headers["knative-serving-revision"] == "hello-00001"
    assert headers["knative-serving-namespace"] == "default"
    assert headers["host"] == "hello.default.localhost:8080"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert rig.router.traffic[KEY].requests == 1


async def test_serve_mode_goes_straight_to_a_ready_pod(rig: Rig) -> None:
    app = Upstream("pod")
    await app.start()
    try:
        rig.store.set_pods(KEY, (pod(app.port), pod(closed_port(), ready=False)))
        rig.store.set_status(KEY, status("Serve"))
        for _ in range(5):
            assert await rig.get("hello.default.localhost") == (200, "pod /x?y=1")
        assert rig.activator.seen == []
    finally:
        await app.stop()


@pytest.mark.parametrize("mode", ["Serve", "Proxy"])
async def test_an_http2_client_is_routed_as_an_http11_one(rig: Rig, mode: str) -> None:
    """HTTP/2 streams never take the fast path; they are routed (and translated to HTTP/1.1) in the task."""
    app = Upstream("pod")
    await app.start()
    peer = await H2Peer.connect(rig.port)
    try:
        rig.store.set_pods(KEY, (pod(app.port),))
        rig.store.set_status(KEY, status(mode))
        for _ in range(2):
            stream_id = peer.request("/x?y=1", authority="hello.default.localhost")
            stream = await peer.response(stream_id)
            assert stream.status == 200
            assert bytes(stream.data) == (b"pod /x?y=1" if mode == "Serve" else b"activator /x?y=1")
        assert rig.router.traffic[KEY].requests == 2
    finally:
        await peer.close()
        await app.stop()


async def test_refused_pod_connection_falls_back_to_the_activator(rig: Rig) -> None:
    rig.store.set_pods(KEY, (pod(closed_port()),))
    rig.store.set_status(KEY, status("Serve"))
    assert await rig.get("hello.default.localhost") == (200, "activator /x?y=1")


async def test_activator_down_gives_a_clear_503(rig: Rig) -> None:
    await rig.activator.stop()
    code, body = await rig.get("hello.default.localhost")
    assert code == 503
    assert "activator" in body
    assert "not reachable" in body
    assert rig.router.traffic[KEY].errors == 1


async def test_activator_down_sends_a_revision_with_a_ready_pod_straight_to_it(rig: Rig) -> None:
    """A restarting activator costs nothing to a revision that has pods: the router goes to one directly
    (Proxy mode included), without the activator's routing headers."""
    app = Upstream("pod")
    await app.start()
    try:
        await rig.activator.stop()
        rig.store.set_pods(KEY, (pod(app.port), pod(closed_port(), ready=False)))
        rig.store.set_status(KEY, status("Proxy"))
        for _ in range(3):
            assert await rig.get("hello.default.localhost") == (200, "pod /x?y=1")
        assert all("knative-serving-revision" not in seen for seen in app.seen)
        assert (rig.router.traffic[KEY].direct_fallbacks, rig.router.traffic[KEY].errors) == (3, 0)
    finally:
        await app.stop()


@pytest.mark.parametrize("activator_up", [True, False], ids=["through-the-activator", "around-it"])
async def test_the_routers_span_names_the_hop_that_answered(rig: Rig, activator_up: bool) -> None:
    """With the activator down, the request goes straight to a ready pod: the span names that pod."""
    collector = FakeCollector()
    await collector.start()
    app = Upstream("pod")
    await app.start()
    tracer = tracer_for(collector)
    router = Router(rig.store, rig.activator.port, ingress_port=8080, tracer=tracer)
    router.set_table(RouteTable(service_routes("default", "hello", [Target("hello-00001", 100)])))
    server = await serve(router.handle, "127.0.0.1", 0)
    try:
        if not activator_up:
            await rig.activator.stop()
        rig.store.set_pods(KEY, (pod(app.port),))
        rig.store.set_status(KEY, status("Proxy"))
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/",
                headers={"Host": "hello.default.localhost"},
            ) as resp,
        ):
            assert resp.status == 200
    finally:
        server.close()
        await router.close()
        await close(tracer)
        await app.stop()
        await collector.close()
    [span] = collector.spans
    expected = f"127.0.0.1:{rig.activator.port if activator_up else app.port}"
    assert span.attributes["serving.upstream"] == expected


async def test_activator_down_and_the_pod_refusing_gives_a_clear_503(rig: Rig) -> None:
    await rig.activator.stop()
    rig.store.set_pods(KEY, (pod(closed_port()),))
    code, body = await rig.get("hello.default.localhost")
    assert code == 503
    assert "not reachable" in body


REUSED = "a response was already sent, or the body streamed, on this exchange"
"""What the engine raises when `forward` is called on an exchange that cannot be forwarded again."""


@pytest.mark.parametrize(
    ("mode", "errors", "code", "body"),
    [
        pytest.param(
            "Serve",
            (UpstreamConnectError("the app refused"), RuntimeError(REUSED)),
            502,
            f"the request cannot be sent again: {REUSED}\n",
            id="fallback-on-an-exchange-that-cannot-be-forwarded-again",
        ),
        pytest.param("Serve", (KeyError("bug"),), 502, "the router failed the request\n", id="bug-to-pod"),
        pytest.param(
            "Proxy", (KeyError("bug"),), 502, "the router failed the request\n", id="bug-to-activator"
        ),
        pytest.param(
            "Proxy",
            (RuntimeError("bug"),),
            502,
            "the router failed the request\n",
            id="runtime-error-first-try",
        ),
        pytest.param(
            "Serve",
            (UpstreamConnectError("refused"), UpstreamConnectError("activator down")),
            503,
            None,
            id="pod-and-activator-refuse",
        ),
        pytest.param(
            "Proxy",
            (UpstreamError("reset", response_started=False), UpstreamError("reset", response_started=False)),
            502,
            None,
            id="activator-then-pod-failed-before-the-response",
        ),
        pytest.param(
            "Proxy",
            (UpstreamError("reset", response_started=False), RuntimeError(REUSED)),
            502,
            None,
            id="activator-failed-and-the-exchange-cannot-be-sent-again",
        ),
    ],
)
async def test_every_failure_of_the_router_is_a_502_503_or_504_never_500(
    rig: Rig, mode: str, errors: tuple[BaseException, ...], code: int, body: str | None
) -> None:
    rig.store.set_pods(KEY, (pod(closed_port()),))
    rig.store.set_status(KEY, status(mode))
    exchange = FakeExchange("hello.default.localhost", *errors)
    await rig.router.handle(cast(Exchange, exchange))
    [(answered, text)] = exchange.responses
    assert answered == code
    if body is not None:
        assert text.decode() == body
    assert rig.router.traffic[KEY].errors == 1
    assert rig.router.traffic[KEY].in_flight == 0


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("HEAD", True), ("POST", False)])
async def test_an_activator_failing_before_it_answers_is_retried_on_a_pod_for_idempotent_methods(
    rig: Rig, method: str, retried: bool
) -> None:
    """The activator died with the request: a GET goes to a ready pod (it may have reached one already, which
    an idempotent request allows), a POST gets a 502 (it must not run twice)."""
    rig.store.set_pods(KEY, (pod(closed_port()),))
    exchange = FakeExchange("hello.default.localhost", UpstreamError("reset", response_started=False))
    exchange.request = Request(
        method, "/", "1.1", Headers([("host", "hello.default.localhost")]), ("127.0.0.1", 5000), True, False
    )
    await rig.router.handle(cast(Exchange, exchange))
    activator = f"127.0.0.1:{rig.activator.port}"
    if retried:
        assert exchange.forwarded_to[0] == activator
        assert len(exchange.forwarded_to) == 2
        assert exchange.forwarded_to[1] != activator
        assert exchange.responses == []  # the pod answered (the fake's forward succeeded)
        assert rig.router.traffic[KEY].direct_fallbacks == 1
    else:
        assert exchange.forwarded_to == [activator]
        [(code, _)] = exchange.responses
        assert code == 502


async def test_started_response_failing_is_left_to_the_engine_to_abort(rig: Rig) -> None:
    rig.store.set_pods(KEY, (pod(closed_port()),))
    rig.store.set_status(KEY, status("Serve"))
    exchange = FakeExchange("hello.default.localhost", UpstreamError("reset mid-body", response_started=True))
    exchange.response_started = True
    with pytest.raises(UpstreamError):
        await rig.router.handle(cast(Exchange, exchange))
    assert exchange.responses == []


HOSTILE = {
    "K-Original-Host": "evil.example",
    "K-Proxy-Request": "activator",
    "Knative-Serving-Revision": "other-00001",
    "Knative-Serving-Namespace": "kube-system",
    "K-Network-Probe": "queue",
    "K-Network-Hash": "x",
    "K-Kubelet-Probe": "queue",
    "K-App-Refused": "1",
    "K-Original-User-Agent": "forged/1.0",
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Proto": "https",
    "Forwarded": "for=203.0.113.9;host=evil.example",
    "X-Custom": "kept",
}


@pytest.mark.parametrize("mode", ["Serve", "Proxy"])
async def test_the_ingress_strips_what_only_the_platform_may_say(rig: Rig, mode: str) -> None:
    """A client cannot inject the app's Host (K-Original-Host), hide its load (K-Proxy-Request), pick a
    revision, pose as a probe, or forge where it came from."""
    app = Upstream("pod")
    await app.start()
    try:
        rig.store.set_pods(KEY, (pod(app.port),))
        rig.store.set_status(KEY, status(mode))
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{rig.port}/h", headers={"Host": "hello.default.localhost", **HOSTILE}
            ) as resp,
        ):
            assert resp.status == 200
        [seen] = (app if mode == "Serve" else rig.activator).seen
    finally:
        await app.stop()
    assert seen["x-custom"] == "kept"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    for name in (
        "k-original-host",
        "k-proxy-request",
        "k-network-probe",
        "k-network-hash",
        "k-kubelet-probe",
        "k-original-user-agent",
    ):
        assert name not in seen, name
    for name in ("k-app-refused", "x-forwarded-host", "forwarded"):
        assert name not in seen, name
    if mode == "Serve":
        assert "knative-serving-revision" not in seen
    else:  # the router names the revision it picked, never the client's
        assert (seen["knative-serving-revision"], seen["knative-serving-namespace"]) == (
            "hello-00001",
            "default",
        )


@pytest.mark.parametrize(
    ("client", "trusted", "forwarded_for", "proto", "kept"),
    [
        pytest.param("127.0.0.1", (), "127.0.0.1", "http", False, id="untrusted-replaced"),
        pytest.param("10.1.2.3", ("10.0.0.0/8",), "203.0.113.9, 10.1.2.3", "https", True, id="trusted-kept"),
        pytest.param(
            "192.0.2.1", ("10.0.0.0/8",), "192.0.2.1", "http", False, id="outside-the-trusted-block"
        ),
        pytest.param("::1", ("::1/128",), "203.0.113.9, ::1", "https", True, id="ipv6-trusted"),
    ],
)
def test_forwarding_headers_are_kept_only_from_trusted_proxies(
    client: str, trusted: tuple[str, ...], forwarded_for: str, proto: str, kept: bool
) -> None:
    headers = Headers([(name, value) for name, value in HOSTILE.items()])
    sanitize(headers, client, [ipaddress.ip_network(t) for t in trusted])
    assert headers.get("x-forwarded-for") == forwarded_for
    assert headers.get("x-forwarded-proto") == proto
    assert (headers.get("forwarded") is not None, headers.get("x-forwarded-host") is not None) == (kept, kept)
    assert headers.get("k-original-host") is None
    assert headers.get("knative-serving-revision") is None


@pytest.mark.parametrize("agent", ["kube-probe/1.30", "Knative-Activator-Probe", "Knative-Autoscaling-Probe"])
def test_a_clients_probe_user_agent_travels_as_k_original_user_agent(agent: str) -> None:
    """No hop may take a client for a probe: the activator and the queue-proxy answer probes themselves."""
    headers = Headers([("Host", "hello.default.localhost"), ("User-Agent", agent)])
    sanitize(headers, "127.0.0.1")
    assert headers.get("user-agent") is None
    assert headers.get("k-original-user-agent") == agent


def test_an_ordinary_user_agent_is_left_alone() -> None:
    headers = Headers([("Host", "hello.default.localhost"), ("User-Agent", "curl/8.5.0")])
    sanitize(headers, "127.0.0.1")
    assert headers.get("user-agent") == "curl/8.5.0"
    assert headers.get("k-original-user-agent") is None


def _sanitized_one_rule_at_a_time(
    pairs: list[tuple[str, str]], client_ip: str, trusted: list[ipaddress.IPv4Network]
) -> list[tuple[str, str]]:
    """`sanitize`'s rules applied one after another, each as its own pass: what the one-pass version must
    match, pair for pair and in order."""
    headers = Headers(pairs)
    for name in {n for n, _ in headers.items() if n in PLATFORM_ONLY or n.startswith(PLATFORM_PREFIXES)}:
        headers.remove(name)
    if any(ipaddress.ip_address(client_ip) in network for network in trusted):
        previous = headers.get("x-forwarded-for")
        headers.set("x-forwarded-for", f"{previous}, {client_ip}" if previous else client_ip)
    else:
        for name in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"):
            headers.remove(name)
        headers.set("x-forwarded-for", client_ip)
    if "x-forwarded-proto" not in headers:
        headers.set("x-forwarded-proto", "http")
    agent = headers.get("user-agent")
    if agent is not None and agent.startswith(
        ("kube-probe/", "Knative-Activator-Probe", "Knative-Autoscaling-Probe")
    ):
        headers.remove("user-agent")
        headers.set("k-original-user-agent", agent)
    return headers.items()


PLATFORM_ONLY = {
    "k-original-host",
    "k-original-user-agent",
    "k-proxy-request",
    "k-kubelet-probe",
    "k-app-refused",
}
PLATFORM_PREFIXES = ("knative-serving-", "k-network-")
NAMES = [
    *PLATFORM_ONLY,
    "knative-serving-revision",
    "k-network-probe",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "user-agent",
    "host",
    "content-type",
    "k-other",
]


@settings(max_examples=300, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(
            st.sampled_from(NAMES),
            st.sampled_from(["a", "kube-probe/1.3", "Knative-Activator-Probe", "1.2.3.4"]),
        ),
        max_size=12,
    ),
    client_ip=st.sampled_from(["10.1.2.3", "192.0.2.1"]),
)
def test_sanitize_in_one_pass_matches_its_rules_one_by_one(
    pairs: list[tuple[str, str]], client_ip: str
) -> None:
    trusted = [ipaddress.IPv4Network("10.0.0.0/8")]
    headers = Headers(pairs)
    sanitize(headers, client_ip, trusted)
    assert headers.items() == _sanitized_one_rule_at_a_time(pairs, client_ip, trusted)
