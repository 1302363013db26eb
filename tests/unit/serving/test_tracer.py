"""The tracer: one server span per request under the caller's context, exported over OTLP/HTTP to a real
(fake) collector; the request's trace headers name this span as the next hop's parent; off, nothing of
OpenTelemetry is even imported."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from serving.contract.tracing import Tracing
from serving.http import Headers
from serving.tracer import QUEUE_WAIT, REVISION, Tracer, start_tracing
from tests.fakes.otlp import FakeCollector

ROOT = Path(__file__).resolve().parents[3]
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
SERVER = 2
"""OTLP's SPAN_KIND_SERVER."""


@pytest.fixture
async def collector() -> AsyncIterator[FakeCollector]:
    fake = FakeCollector()
    await fake.start()
    yield fake
    await fake.close()


def tracer_for(collector: FakeCollector, sample_rate: float = 1.0) -> Tracer:
    tracer = start_tracing(
        Tracing(endpoint=collector.url, sample_rate=sample_rate, export_interval=0.05),
        "queue-proxy",
        {REVISION: "hello-00001"},
    )
    assert tracer is not None
    return tracer


async def close(tracer: Tracer) -> None:
    """Flush: the exporter thread posts to the collector, which runs on this loop."""
    await asyncio.to_thread(tracer.close)


async def test_a_span_under_the_callers_context_becomes_the_next_hops_parent(
    collector: FakeCollector,
) -> None:
    tracer = tracer_for(collector)
    headers = Headers([("traceparent", f"00-{TRACE}-{SPAN}-01"), ("tracestate", "vendor=1")])
    span = tracer.start(headers, "GET", "/path?q=secret", "10.0.0.7")
    span.finish(200, {QUEUE_WAIT: 0.25})
    await close(tracer)

    [got] = collector.spans
    assert (got.service, got.name, got.kind) == ("queue-proxy", "queue-proxy", SERVER)
    assert (got.trace_id, got.parent_id) == (TRACE, SPAN)
    assert headers.get("traceparent") == f"00-{TRACE}-{got.span_id}-01"
    assert headers.get("tracestate") == "vendor=1"
    assert got.attributes == {
        "http.request.method": "GET",
        "url.path": "/path",
        "client.address": "10.0.0.7",
        "http.response.status_code": 200,
        "serving.revision": "hello-00001",
        "serving.queue.wait_seconds": 0.25,
    }
    assert not got.error


async def test_b3_callers_are_honoured_and_answered_in_b3(collector: FakeCollector) -> None:
    tracer = tracer_for(collector)
    single = Headers([("b3", f"{TRACE}-{SPAN}-1")])
    tracer.start(single, "GET", "/").finish(200)
    multi = Headers([("X-B3-TraceId", TRACE[16:]), ("X-B3-SpanId", SPAN), ("X-B3-Sampled", "1")])
    tracer.start(multi, "GET", "/").finish(503)
    await close(tracer)

    first, second = collector.spans
    assert (first.trace_id, first.parent_id) == (TRACE, SPAN)
    assert single.get("b3") == f"{TRACE}-{first.span_id}-1-{SPAN}"
    assert single.get("traceparent") == f"00-{TRACE}-{first.span_id}-01"
    assert (second.trace_id, second.parent_id) == ("0" * 16 + TRACE[16:], SPAN)
    assert multi.get("x-b3-spanid") == second.span_id
    assert multi.get("x-b3-parentspanid") == SPAN
    assert second.error, "a 5xx marks the server span failed"


async def test_a_new_trace_starts_without_a_caller_context(collector: FakeCollector) -> None:
    tracer = tracer_for(collector)
    headers = Headers([("traceparent", "not-a-traceparent"), ("tracestate", "orphan=1")])
    tracer.start(headers, "POST", "/").finish(201)
    await close(tracer)
    [got] = collector.spans
    assert got.parent_id == ""
    assert headers.get("traceparent") == f"00-{got.trace_id}-{got.span_id}-01"
    assert "tracestate" not in headers


@pytest.mark.parametrize(
    ("rate", "incoming"),
    [
        pytest.param(0.0, [], id="rate-0-new-trace"),
        pytest.param(1.0, [("traceparent", f"00-{TRACE}-{SPAN}-00")], id="caller-not-sampled"),
        pytest.param(0.0, [("b3", f"{'f' * 32}-{SPAN}")], id="b3-deferred-to-rate-0"),
    ],
)
async def test_unsampled_requests_still_propagate_but_record_nothing(
    collector: FakeCollector, rate: float, incoming: list[tuple[str, str]]
) -> None:
    tracer = tracer_for(collector, sample_rate=rate)
    headers = Headers(incoming)
    tracer.start(headers, "GET", "/").finish(200)
    await close(tracer)
    assert collector.spans == []
    traceparent = headers.get("traceparent") or ""
    assert traceparent.startswith("00-")
    assert traceparent.endswith("-00"), "not sampled"
    assert SPAN not in traceparent, "the next hop's parent is this hop's (unrecorded) span"


def test_off_is_none() -> None:
    assert start_tracing(Tracing(), "activator") is None


def run_python(code: str, pythonpath: str = "") -> subprocess.CompletedProcess[str]:
    path = f"{pythonpath}:{ROOT}" if pythonpath else str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": path}, timeout=60
    )


def test_off_imports_nothing_of_opentelemetry() -> None:
    result = run_python(
        "import sys\n"
        "import activator.main, queueproxy.main, controller.kube.ingress, controller.local.system\n"
        "from serving.contract.tracing import Tracing\n"
        "from serving.tracer import start_tracing\n"
        "assert start_tracing(Tracing(), 'router') is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_on_without_the_extra_is_refused_with_one_line(tmp_path: Path) -> None:
    shadow = tmp_path / "opentelemetry"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('no opentelemetry here', name='opentelemetry')\n")
    result = run_python(
        "from serving.contract.tracing import Tracing\n"
        "from serving.tracer import TracingUnavailable, start_tracing\n"
        "try:\n"
        "    start_tracing(Tracing(endpoint='http://127.0.0.1:1'), 'router')\n"
        "except TracingUnavailable as exc:\n"
        "    print(exc)\n",
        pythonpath=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert "SERVING_TRACING_ENDPOINT" in line
    assert "serving[tracing]" in line
