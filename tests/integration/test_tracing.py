"""Distributed tracing through real processes: a queue-proxy alone (on, off, and on without OpenTelemetry),
and `serving up` end to end, where a client's trace gets one span per hop (router, activator on a cold start,
queue-proxy) chained by parent ids, exported to a fake OTLP/HTTP collector or printed by `--trace`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.app import FakeApp
from tests.fakes.otlp import FakeCollector
from tests.fakes.queueproxy import QueueProxyProcess
from tests.integration.conftest import ServingUp, eventually, write_app_service

Start = Callable[..., Awaitable[ServingUp]]

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{CLIENT_SPAN}-01"
COLD = {"autoscaling.knative.dev/initial-scale": "0"}
ZERO_INITIAL_SCALE = ["--autoscaler-config", "allow-zero-initial-scale=true"]


@pytest.fixture
async def collector() -> AsyncIterator[FakeCollector]:
    fake = FakeCollector()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def app() -> AsyncIterator[FakeApp]:
    async with FakeApp() as running:
        yield running


async def headers_seen(url: str, headers: dict[str, str]) -> dict[str, list[str]]:
    """The headers the fake app received for a `GET /headers` through `url`."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/headers", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        seen: dict[str, list[str]] = json.loads(await resp.text())
        return seen


def tracing_env(collector: FakeCollector) -> dict[str, str]:
    return {"SERVING_TRACING_ENDPOINT": collector.url, "SERVING_TRACING_EXPORT_INTERVAL": "100ms"}


async def test_queue_proxy_off_passes_trace_headers_untouched(app: FakeApp, collector: FakeCollector) -> None:
    async with QueueProxyProcess.start(user_port=app.port) as qp:
        seen = await headers_seen(qp.url, {"traceparent": TRACEPARENT, "b3": f"{TRACE}-{CLIENT_SPAN}-1"})
        assert seen["traceparent"] == [TRACEPARENT]
        assert seen["b3"] == [f"{TRACE}-{CLIENT_SPAN}-1"]
    assert collector.exports == 0


async def test_queue_proxy_on_makes_its_span_the_apps_parent(app: FakeApp, collector: FakeCollector) -> None:
    async with QueueProxyProcess.start(user_port=app.port, env=tracing_env(collector)) as qp:
        seen = await headers_seen(qp.url, {"traceparent": TRACEPARENT, "tracestate": "vendor=1"})
        await collector.wait_for(lambda c: len(c.spans) == 1)
    [span] = collector.spans
    assert (span.service, span.name, span.trace_id, span.parent_id) == (
        "queue-proxy",
        "queue-proxy",
        TRACE,
        CLIENT_SPAN,
    )
    assert seen["traceparent"] == [f"00-{TRACE}-{span.span_id}-01"]
    assert seen["tracestate"] == ["vendor=1"]
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["serving.revision"] == "hello-00001"
    assert span.attributes["serving.namespace"] == "default"
    assert span.attributes["serving.upstream"] == f"127.0.0.1:{app.port}"
    assert span.attributes["serving.queue.wait_seconds"] == 0.0


async def test_queue_proxy_on_without_opentelemetry_stops_with_one_line(app: FakeApp, tmp_path: Path) -> None:
    shadow = tmp_path / "opentelemetry"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('no opentelemetry here', name='opentelemetry')\n")
    env = {"SERVING_TRACING_ENDPOINT": "http://127.0.0.1:4318", "PYTHONPATH": str(tmp_path)}
    with pytest.raises(RuntimeError, match="exited with 1") as failed:
        async with QueueProxyProcess.start(user_port=app.port, env=env, wait_ready=False):
            pass
    lines = [line for line in str(failed.value).splitlines()[1:] if line.strip()]
    assert len(lines) == 1, lines
    assert "SERVING_TRACING_ENDPOINT is set" in lines[0]
    assert "serving[tracing]" in lines[0]


async def test_a_cold_request_is_one_trace_with_a_span_per_hop(
    serving_up: Start, tmp_path: Path, collector: FakeCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in tracing_env(collector).items():
        monkeypatch.setenv(name, value)
    up = await serving_up([write_app_service(tmp_path, "hello", annotations=COLD)], ZERO_INITIAL_SCALE)
    status, body = await up.get("hello", "/headers", headers={"traceparent": TRACEPARENT})
    assert status == 200, body
    await collector.wait_for(lambda c: len(c.trace(TRACE)) >= 3, timeout=15)
    spans = {s.name: s for s in collector.trace(TRACE)}
    assert sorted(spans) == ["activator", "queue-proxy", "router"]
    router, activator, queue_proxy = spans["router"], spans["activator"], spans["queue-proxy"]
    assert router.parent_id == CLIENT_SPAN
    assert activator.parent_id == router.span_id
    assert queue_proxy.parent_id == activator.span_id
    assert dict(json.loads(body))["traceparent"] == f"00-{TRACE}-{queue_proxy.span_id}-01"
    assert isinstance(wait := activator.attributes["serving.activator.wait_seconds"], float)
    assert wait > 0, "a cold start waits in the activator"
    for span in spans.values():
        assert span.attributes["serving.revision"] == "hello-00001"
        assert span.attributes["http.response.status_code"] == 200
    assert str(router.attributes["serving.upstream"]).startswith("127.0.0.1:"), "the activator's address"
    assert activator.attributes["serving.upstream"] != router.attributes["serving.upstream"], "a pod's"
    assert router.start_ns <= activator.start_ns <= queue_proxy.start_ns
    assert await up.stop() == 0


async def test_serving_up_trace_prints_each_trace(serving_up: Start, tmp_path: Path) -> None:
    hello = write_app_service(tmp_path, "hello", annotations=COLD)
    up = await serving_up([hello], ["--trace", "--no-live", *ZERO_INITIAL_SCALE])
    status, _ = await up.get("hello", headers={"traceparent": TRACEPARENT})
    assert status == 200

    async def printed() -> bool:
        return f"trace {TRACE}: 3 span(s)" in up.output()

    await eventually(printed, 15, f"no trace printed:\n{up.output()}")
    assert await up.stop() == 0
    lines = up.output().splitlines()
    start = next(i for i, line in enumerate(lines) if f"trace {TRACE}" in line)
    hops = lines[start + 1 : start + 4]
    assert [line.split()[1] for line in hops] == ["router", "activator", "queue-proxy"], hops
    assert all("status 200" in line for line in hops), hops
    assert "waited" in hops[1], "the activator's wait for the cold start"
