"""The activator handler's error paths with an exchange whose forward fails as scripted: whatever goes wrong,
a client that got nothing yet gets a 502, 503 or 504 from the activator, never the engine's 500."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
from prometheus_client import CollectorRegistry

from activator.handler import ActivatorHandler
from activator.metrics import ActivatorMetrics
from activator.registry import Registry, max_scale
from activator.reporter import StatReporter
from serving import header
from serving.autoscaling import DEFAULT, AutoscalerConfig, parse_config
from serving.clock import FakeClock
from serving.http import (
    Exchange,
    UpstreamConnectError,
    UpstreamError,
)
from serving.platform import Pod, Revision, RevisionKey, Snapshot
from tests.fakes.exchange import FakeExchange

KEY = RevisionKey("default", "hello-00001")
HOST = "hello-00001.default.svc.cluster.local"
REUSED = "a response was already sent, or the body streamed, on this exchange"
"""What the engine raises when `forward` is called on an exchange that cannot be forwarded again."""


def pod(index: int) -> Pod:
    return Pod(
        name=f"hello-{index}",
        host="127.0.0.1",
        port=40000 + index,
        stats_port=1,
        admin_port=1,
        ready=True,
        started_at=0.0,
    )


class Rig:
    def __init__(self, *pods: Pod) -> None:
        self.prometheus = CollectorRegistry()
        self.registry = Registry(
            probe=lambda _key: self._probe,
            metrics=ActivatorMetrics(self.prometheus, lambda: self.registry.occupancy()),
            queue_depth=10,
        )
        self.registry.apply(
            Snapshot(1, (Revision(key=KEY, service="hello", configuration="hello", pods=pods),))
        )
        reporter = StatReporter(pod_name="test", clock=FakeClock(), send=lambda _: None)
        self.handler = ActivatorHandler(self.registry, reporter, lambda: True)

    @staticmethod
    async def _probe(_: Pod) -> bool:
        return False

    async def run(self, exchange: FakeExchange) -> None:
        await asyncio.wait_for(self.handler(cast(Exchange, exchange)), 5.0)

    def count(self, code: int) -> float:
        labels = {"namespace": KEY.namespace, "revision": KEY.name, "code": str(code)}
        return self.prometheus.get_sample_value("activator_requests_total", labels) or 0.0


@pytest.mark.parametrize(
    ("errors", "body"),
    [
        pytest.param(
            (UpstreamConnectError("refused"), RuntimeError(REUSED)),
            b"activator: upstream failed: the request cannot be sent again: " + REUSED.encode() + b"\n",
            id="retry-on-an-exchange-that-cannot-be-forwarded-again",
        ),
        pytest.param((KeyError("bug"),), b"activator: internal error\n", id="unexpected-exception"),
        pytest.param((RuntimeError("bug"),), b"activator: internal error\n", id="runtime-error-first-try"),
    ],
)
async def test_failures_that_are_no_upstream_error_answer_502_not_500(
    errors: tuple[BaseException, ...], body: bytes
) -> None:
    rig = Rig(pod(1), pod(2))
    exchange = FakeExchange(HOST, *errors)
    try:
        await rig.run(exchange)
    finally:
        await rig.registry.close()
    assert exchange.responses == [(502, body)]
    assert rig.count(502) == 1


async def test_refused_pod_leaves_rotation_and_the_request_goes_to_the_other() -> None:
    rig = Rig(pod(1), pod(2))
    exchange = FakeExchange(HOST, UpstreamConnectError("refused"))
    try:
        await rig.run(exchange)
        entry = rig.registry.get(KEY)
        assert entry is not None
        refused, served = exchange.forwarded_to
        assert refused != served
        assert entry.backends.healthy == [served]
        assert entry.backends.probing == [refused]
    finally:
        await rig.registry.close()
    assert exchange.responses == []
    assert rig.count(200) == 1
    assert exchange.retry_refused == [True, True], "a queue-proxy's marked 502 must move the request on"


async def test_started_response_failing_is_left_to_the_engine_to_abort() -> None:
    rig = Rig(pod(1))
    exchange = FakeExchange(HOST, UpstreamError("reset mid-body", response_started=True))
    exchange.response_started = True
    try:
        with pytest.raises(UpstreamError):
            await rig.run(exchange)
    finally:
        await rig.registry.close()
    assert exchange.responses == []


@pytest.mark.parametrize(
    ("annotations", "config", "expected"),
    [
        pytest.param({"autoscaling.knative.dev/max-scale": "3"}, DEFAULT, 3, id="annotation"),
        pytest.param({}, parse_config({"max-scale": "5"}), 5, id="cluster-max-scale"),
        pytest.param({}, DEFAULT, 0, id="unbounded"),
        pytest.param({"autoscaling.knative.dev/max-scale": "x"}, DEFAULT, 0, id="refused-annotation"),
    ],
)
def test_max_scale_is_read_as_the_autoscaler_reads_it(
    annotations: dict[str, str], config: AutoscalerConfig, expected: int
) -> None:
    revision = Revision(key=KEY, service="hello", configuration="hello", annotations=annotations)
    assert max_scale(revision, config) == expected


def one_slot(rig: Rig, annotations: dict[str, str]) -> None:
    """The revision with one pod of containerConcurrency 1."""
    rig.registry.apply(
        Snapshot(
            2,
            (
                Revision(
                    key=KEY,
                    service="hello",
                    configuration="hello",
                    container_concurrency=1,
                    annotations=annotations,
                    pods=(pod(1),),
                ),
            ),
        )
    )


async def test_over_capacity_at_max_scale_answers_503_with_retry_after_at_once() -> None:
    rig = Rig(pod(1))
    one_slot(rig, {"autoscaling.knative.dev/max-scale": "1"})
    entry = rig.registry.get(KEY)
    assert entry is not None
    assert entry.throttler.saturated
    held = entry.throttler.try_acquire()  # the one slot is busy
    assert held is not None
    waiting = asyncio.create_task(entry.throttler.acquire())  # and the one place in the queue taken
    await asyncio.sleep(0)
    exchange = FakeExchange(HOST)
    await rig.run(exchange)
    assert exchange.responses == [(503, b"revision at max-scale: over capacity\n")]
    assert (header.RETRY_AFTER, "1") in exchange.response_headers
    assert exchange.forwarded_to == []
    assert rig.count(503) == 1
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)


@pytest.mark.parametrize(
    ("grpc_timeout", "forwarded"),
    [("3S", True), ("200m", False)],
    ids=["passed-on-shortened-by-the-wait", "ends-the-wait"],
)
async def test_a_grpc_timeout_bounds_the_wait_and_the_pod_gets_what_is_left(
    grpc_timeout: str, forwarded: bool
) -> None:
    rig = Rig(pod(1))
    one_slot(rig, {})
    entry = rig.registry.get(KEY)
    assert entry is not None
    held = entry.throttler.try_acquire()  # the one slot is busy: the call waits
    assert held is not None
    exchange = FakeExchange(HOST, headers=[(header.GRPC_TIMEOUT, grpc_timeout)])
    call = asyncio.create_task(rig.run(exchange))
    await asyncio.sleep(0.5)
    entry.throttler.release(held)
    try:
        await call
    finally:
        await rig.registry.close()
    if forwarded:
        [sent] = exchange.forwarded_headers
        left = header.grpc_timeout(sent.get(header.GRPC_TIMEOUT) or "")
        assert left is not None
        assert 1.0 < left <= 2.5, sent
    else:
        assert exchange.forwarded_to == []
        assert exchange.responses == [(504, b"activator request timeout\n")]
