from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import pytest
from prometheus_client import CollectorRegistry

from queueproxy.config import Identity
from queueproxy.drain import Drainer
from queueproxy.handler import CLIENT_GONE, QueueHandler
from queueproxy.inflight import InFlight
from queueproxy.metrics import RequestMetrics
from queueproxy.probe import ProbeSpec
from queueproxy.readiness import Readiness
from serving.breaker import Breaker
from serving.clock import FakeClock
from serving.concurrency import RequestStats
from serving.contract.probe import probe_token, token_matches
from serving.http import (
    ForwardTimeouts,
    H2UpstreamPool,
    Headers,
    IdleTimeout,
    Request,
    ResponseStartTimeout,
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
)

Forward = Callable[["FakeExchange"], Awaitable[int]]
IDENTITY = Identity(namespace="ns", configuration="cfg", revision="rev", pod="pod", pod_ip="127.0.0.1")


class FakeExchange:
    """Stands in for the engine's Exchange: records local responses, runs `behaviour` as the forward."""

    def __init__(self, headers: Iterable[tuple[str, str]] = (), behaviour: Forward | None = None) -> None:
        self.request = Request("GET", "/", "1.1", Headers(headers), ("127.0.0.1", 5000), True, False)
        self.response_started = False
        self.responses: list[tuple[int, dict[str, str], bytes]] = []
        self.forwarded: list[Headers] = []
        self._behaviour = behaviour

    @property
    def task(self) -> asyncio.Task[None]:
        task = asyncio.current_task()
        assert task is not None
        return task  # the test's own task runs the handler

    async def respond(self, status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> None:
        self.responses.append((status, dict(headers), body))
        self.response_started = True

    async def forward(
        self,
        pool: UpstreamPool | H2UpstreamPool,
        headers: Headers,
        *,
        timeouts: ForwardTimeouts | None = None,
        response_headers: Iterable[tuple[str, str]] = (),
    ) -> int:
        self.forwarded.append(headers)
        if self._behaviour is None:
            return 200
        return await self._behaviour(self)


def requests_counted(registry: CollectorRegistry, status: int) -> float:
    """`queue_requests_total` for `status` (0 when none was counted)."""
    labels = {
        "namespace_name": "ns",
        "configuration_name": "cfg",
        "revision_name": "rev",
        "pod_name": "pod",
        "response_code": str(status),
        "response_code_class": f"{status // 100}xx",
    }
    return registry.get_sample_value("queue_requests_total", labels) or 0.0


class Rig:
    """A handler wired to real breaker, stats, metrics and readiness objects, with a fake clock."""

    def __init__(
        self,
        *,
        concurrency: int = 0,
        ready: bool = True,
        readiness: Readiness | None = None,
        probe_token: str = "",
    ) -> None:
        self.clock = FakeClock(100.0)
        self.stats = RequestStats(self.clock.now())
        self.breaker = Breaker(capacity=concurrency, queue_depth=10 * concurrency) if concurrency else None
        self.registry = CollectorRegistry()
        self.drainer = Drainer(30.0, now=self.clock.now)
        self.in_flight = InFlight(now=self.clock.now)
        self.readiness = readiness or Readiness(ProbeSpec(), 1, aggressive_poll_timeout=0.0)
        self.readiness_result = ready
        metrics = RequestMetrics(self.registry, IDENTITY, queue_depth=lambda: 0, in_flight=lambda: 0)
        self.handler = QueueHandler(
            pool=UpstreamPool("127.0.0.1", 1),
            breaker=self.breaker,
            stats=self.stats,
            metrics=metrics,
            drainer=self.drainer,
            in_flight=self.in_flight,
            readiness=self.readiness,
            timeout=300.0,
            timeouts=ForwardTimeouts(),
            probe_token=probe_token,
            now=self.clock.now,
        )

        async def check() -> bool:
            return self.readiness_result

        if readiness is None:
            self.readiness.check = check  # type: ignore[method-assign]  # readiness itself is tested apart

    def count(self, status: int) -> float:
        return requests_counted(self.registry, status)


@pytest.mark.parametrize(
    ("headers", "ready", "status", "body"),
    [
        pytest.param(
            [("User-Agent", "kube-probe/1.30"), ("K-Network-Probe", "queue")], True, 200, b"queue", id="ok"
        ),
        pytest.param(
            [("User-Agent", "kube-probe/1.30"), ("K-Network-Probe", "queue")], False, 503, None, id="unready"
        ),
        pytest.param([("K-Kubelet-Probe", "x")], True, 200, b"queue", id="kubelet-header"),
        pytest.param([("User-Agent", "Knative-Autoscaling-Probe")], True, 200, b"queue", id="autoscaling-ua"),
        pytest.param(
            [("User-Agent", "kube-probe/1.30"), ("K-Network-Probe", "other")], True, 400, None, id="bad"
        ),
        pytest.param([("K-Network-Probe", "probe"), ("K-Network-Hash", "h1")], True, 200, b"h1", id="hash"),
    ],
)
async def test_health_checks_are_answered_locally(
    headers: list[tuple[str, str]], ready: bool, status: int, body: bytes | None
) -> None:
    rig = Rig(ready=ready)
    exchange = FakeExchange(headers)
    await rig.handler(exchange)
    assert exchange.forwarded == []
    assert exchange.responses[0][0] == status
    if body is not None:
        assert exchange.responses[0][2] == body
    assert rig.stats.report(rig.clock.now()).request_count == 0, "probes are not counted"


TOKEN = probe_token("installation-secret", "ns", "rev")
PROBES = [
    [("User-Agent", "kube-probe/1.30"), ("K-Network-Probe", "queue")],
    [("K-Kubelet-Probe", "x")],
    [("User-Agent", "Knative-Activator-Probe"), ("K-Network-Probe", "queue")],
    [("K-Network-Probe", "probe"), ("K-Network-Hash", "h1")],
]


@pytest.mark.parametrize("headers", PROBES, ids=["kube-probe", "kubelet-header", "activator", "hash"])
async def test_with_a_probe_token_only_the_platforms_probes_are_answered_here(
    headers: list[tuple[str, str]],
) -> None:
    """Probe-like requests without the revision's token (another pod, a client past the ingress) are the
    app's: proxied with their headers, the wrong token removed; with the token they are answered here."""
    rig = Rig(probe_token=TOKEN)
    for sent in ([], [("K-Network-Probe-Token", "guess")], [("K-Network-Probe-Token", TOKEN[:-1])]):
        exchange = FakeExchange([*headers, *sent])
        await rig.handler(exchange)
        assert exchange.responses == [], f"{sent} was answered as a probe"
        forwarded = exchange.forwarded[-1]
        assert "k-network-probe-token" not in forwarded
        for name, value in headers:
            assert forwarded.get(name.lower()) == value
    platform = FakeExchange([*headers, ("K-Network-Probe-Token", TOKEN)])
    await rig.handler(platform)
    assert platform.forwarded == []
    assert platform.responses[0][0] == 200


def test_probe_tokens_differ_per_revision_and_need_a_secret() -> None:
    assert len(TOKEN) == 32
    assert probe_token("installation-secret", "ns", "rev") == TOKEN
    assert probe_token("installation-secret", "ns", "rev2") != TOKEN
    assert probe_token("installation-secret", "ns2", "rev") != TOKEN
    assert probe_token("other-secret", "ns", "rev") != TOKEN
    assert probe_token("", "ns", "rev") == ""
    assert token_matches("", None)
    assert token_matches("", "anything")
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(TOKEN, None)
    assert not token_matches(TOKEN, "")


async def test_health_checks_fail_while_draining() -> None:
    rig = Rig()
    rig.drainer.begin()
    exchange = FakeExchange([("User-Agent", "kube-probe/1.30"), ("K-Network-Probe", "queue")])
    await rig.handler(exchange)
    assert exchange.responses[0][0] == 503


async def test_other_requests_are_forwarded_with_rewritten_headers() -> None:
    rig = Rig()
    exchange = FakeExchange([("Host", "a"), ("K-Original-Host", "b"), ("K-Proxy-Request", "activator")])
    await rig.handler(exchange)
    assert exchange.responses == []
    assert exchange.forwarded[0].get("host") == "b"
    window = rig.stats.report(rig.clock.now())
    assert (window.request_count, window.proxied_request_count) == (1.0, 1.0)
    assert rig.count(200) == 1.0


@pytest.mark.parametrize(
    ("error", "status"),
    [
        pytest.param(UpstreamConnectError("refused"), 502, id="refused"),
        pytest.param(UpstreamError("reset", response_started=False), 502, id="upstream-error"),
        pytest.param(ResponseStartTimeout(), 504, id="response-start"),
        pytest.param(IdleTimeout(), 504, id="idle"),
    ],
)
async def test_domain_errors_become_local_responses(error: Exception, status: int) -> None:
    async def fail(_: FakeExchange) -> int:
        raise error

    rig = Rig(concurrency=1)
    exchange = FakeExchange(behaviour=fail)
    await rig.handler(exchange)
    assert exchange.responses[0][0] == status
    assert rig.count(status) == 1.0
    assert rig.breaker is not None
    assert rig.breaker.in_flight == 0


async def test_no_local_response_once_the_app_response_started() -> None:
    async def fail(exchange: FakeExchange) -> int:
        exchange.response_started = True
        raise UpstreamError("reset mid-body", response_started=True)

    rig = Rig()
    exchange = FakeExchange(behaviour=fail)
    await rig.handler(exchange)
    assert exchange.responses == []
    assert rig.count(502) == 1.0


async def test_cancelled_handler_frees_its_slot_at_once() -> None:
    """The engine cancels the handler when the client goes: in flight or queued, the slot is freed."""
    entered = asyncio.Event()

    async def hang(_: FakeExchange) -> int:
        entered.set()
        await asyncio.Event().wait()
        return 200

    rig = Rig(concurrency=1)
    assert rig.breaker is not None
    holder = asyncio.create_task(rig.handler(FakeExchange(behaviour=hang)))
    await entered.wait()
    waiter = asyncio.create_task(rig.handler(FakeExchange(behaviour=hang)))
    await asyncio.sleep(0)
    assert (rig.breaker.in_flight, rig.breaker.waiting) == (1, 1)
    waiter.cancel()
    holder.cancel()
    await asyncio.gather(holder, waiter, return_exceptions=True)
    assert (rig.breaker.in_flight, rig.breaker.waiting) == (0, 0)
    assert rig.stats.concurrency == 0
    assert len(rig.in_flight) == 0
    assert rig.count(CLIENT_GONE) == 2.0


@pytest.mark.parametrize(
    ("headers", "expires_after"),
    [
        pytest.param([], 300.0, id="revision-timeout"),
        pytest.param([("grpc-timeout", "2S")], 2.0, id="grpc-seconds"),
        pytest.param([("grpc-timeout", "1500m")], 1.5, id="grpc-millis"),
        pytest.param([("grpc-timeout", "10H")], 300.0, id="grpc-later-than-the-revision"),
        pytest.param([("grpc-timeout", "nonsense")], 300.0, id="grpc-malformed"),
    ],
)
async def test_deadline_gives_504_request_timeout(
    headers: list[tuple[str, str]], expires_after: float
) -> None:
    """The revision timeout, or a gRPC call's `grpc-timeout` when sooner (the app still sees the header)."""
    entered = asyncio.Event()

    async def hang(_: FakeExchange) -> int:
        entered.set()
        await asyncio.Event().wait()
        return 200

    rig = Rig()
    exchange = FakeExchange(headers, behaviour=hang)
    task = asyncio.create_task(rig.handler(exchange))
    await entered.wait()
    rig.clock.advance(expires_after - 0.01)
    assert rig.in_flight.expire() == 0
    rig.clock.advance(0.01)
    assert rig.in_flight.expire() == 1
    await task
    assert exchange.responses == [(504, {"content-type": "text/plain; charset=utf-8"}, b"request timeout\n")]
    assert not task.cancelled()
    assert exchange.forwarded[0].items() == headers


async def test_queue_full_is_503_with_retry_after() -> None:
    entered = asyncio.Event()

    async def hang(_: FakeExchange) -> int:
        entered.set()
        await asyncio.Event().wait()
        return 200

    rig = Rig(concurrency=1)
    tasks = [asyncio.create_task(rig.handler(FakeExchange(behaviour=hang))) for _ in range(11)]
    await entered.wait()
    await asyncio.sleep(0)
    rejected = FakeExchange()
    await rig.handler(rejected)
    status, headers, body = rejected.responses[0]
    assert (status, headers["retry-after"], body) == (503, "1", b"pending request queue full\n")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_activator_probe_fails_as_soon_as_the_app_is_down_though_kubelet_still_sees_ready() -> None:
    """With a periodic readiness probe kubelet's rule keeps a dead app ready for up to period x failures;
    the activator's probe decides where requests go next, so it must see the app down at once."""
    clock = FakeClock(100.0)
    app = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = app.sockets[0].getsockname()[1]
    spec = ProbeSpec(period=10.0, failure_threshold=3)
    rig = Rig(readiness=Readiness(spec, port, now=clock.now))
    kubelet = [("User-Agent", "kube-probe/1.30"), ("K-Network-Probe", "queue")]
    activator = [("User-Agent", "Knative-Activator-Probe"), ("K-Network-Probe", "queue")]
    try:
        for headers in (kubelet, activator):
            exchange = FakeExchange(headers)
            await rig.handler(exchange)
            assert exchange.responses[0][0] == 200
        app.close()
        await app.wait_closed()
        clock.advance(1.0)
        by_kubelet, by_activator = FakeExchange(kubelet), FakeExchange(activator)
        await rig.handler(by_kubelet)
        await rig.handler(by_activator)
        assert by_kubelet.responses[0][0] == 200, "kubelet's rule: not yet three failures in a row"
        assert by_activator.responses[0][:3:2] == (503, b"the app is not ready\n")
    finally:
        await rig.readiness.close()
