"""Trace context headers: W3C `traceparent` and B3 read as their specifications say, and rewritten so the next
hop sees this hop's span as its parent."""

from __future__ import annotations

import pytest

from serving.http import Headers
from serving.tracecontext import TraceContext, extract, inject, parse_b3, parse_traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
CONTEXT = TraceContext(int(TRACE, 16), int(SPAN, 16), True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(f"00-{TRACE}-{SPAN}-01", CONTEXT, id="sampled"),
        pytest.param(
            f"00-{TRACE}-{SPAN}-00", TraceContext(CONTEXT.trace_id, CONTEXT.span_id, False), id="not"
        ),
        pytest.param(f"00-{TRACE}-{SPAN}-03", CONTEXT, id="other-flags-kept-sampled"),
        pytest.param(f"01-{TRACE}-{SPAN}-01-future", CONTEXT, id="later-version-read-by-its-first-fields"),
        pytest.param(f"00-{TRACE}-{SPAN}-01-extra", None, id="version-00-with-more"),
        pytest.param(f"ff-{TRACE}-{SPAN}-01", None, id="version-ff"),
        pytest.param(f"00-{TRACE.upper()}-{SPAN}-01", None, id="upper-case"),
        pytest.param(f"00-{'0' * 32}-{SPAN}-01", None, id="zero-trace"),
        pytest.param(f"00-{TRACE}-{'0' * 16}-01", None, id="zero-span"),
        pytest.param(f"00-{TRACE[:-1]}-{SPAN}-01", None, id="short"),
        pytest.param(f"00_{TRACE}_{SPAN}_01", None, id="separators"),
        pytest.param("", None, id="empty"),
    ],
)
def test_traceparent(value: str, expected: TraceContext | None) -> None:
    assert parse_traceparent(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(f"{TRACE}-{SPAN}-1", CONTEXT, id="sampled"),
        pytest.param(f"{TRACE}-{SPAN}-d-0000000000000001", CONTEXT, id="debug-with-parent"),
        pytest.param(f"{TRACE}-{SPAN}-0", TraceContext(CONTEXT.trace_id, CONTEXT.span_id, False), id="deny"),
        pytest.param(f"{TRACE}-{SPAN}", TraceContext(CONTEXT.trace_id, CONTEXT.span_id, None), id="deferred"),
        pytest.param(
            f"{TRACE[16:]}-{SPAN}-1", TraceContext(int(TRACE[16:], 16), CONTEXT.span_id, True), id="64-bit"
        ),
        pytest.param("1", None, id="sampling-only"),
        pytest.param(f"{TRACE}-xyz-1", None, id="bad-span"),
    ],
)
def test_b3_single_header(value: str, expected: TraceContext | None) -> None:
    assert parse_b3(value) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([("traceparent", f"00-{TRACE}-{SPAN}-01")], CONTEXT, id="w3c"),
        pytest.param(
            [("traceparent", f"00-{TRACE}-{SPAN}-01"), ("b3", f"{'1' * 32}-{'2' * 16}-1")],
            CONTEXT,
            id="w3c-first",
        ),
        pytest.param(
            [("traceparent", "garbage"), ("b3", f"{TRACE}-{SPAN}-1")], CONTEXT, id="invalid-w3c-then-b3"
        ),
        pytest.param(
            [("traceparent", f"00-{TRACE}-{SPAN}-01"), ("traceparent", f"00-{TRACE}-{SPAN}-01")],
            None,
            id="two-traceparents-invalid",
        ),
        pytest.param(
            [("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN), ("x-b3-sampled", "1")], CONTEXT, id="b3-multi"
        ),
        pytest.param(
            [("X-B3-TraceId", TRACE), ("X-B3-SpanId", SPAN), ("X-B3-Flags", "1")], CONTEXT, id="b3-debug-flag"
        ),
        pytest.param([("x-b3-traceid", TRACE)], None, id="b3-multi-without-span"),
        pytest.param([("user-agent", "curl")], None, id="none"),
    ],
)
def test_extract_prefers_w3c_then_b3(headers: list[tuple[str, str]], expected: TraceContext | None) -> None:
    assert extract(Headers(headers)) == expected


def test_inject_makes_the_new_span_the_parent_and_keeps_tracestate() -> None:
    headers = Headers(
        [("traceparent", f"00-{TRACE}-{SPAN}-01"), ("tracestate", "vendor=abc"), ("accept", "*/*")]
    )
    inject(headers, CONTEXT.trace_id, 0x1122334455667788, True, CONTEXT)
    assert headers.get("traceparent") == f"00-{TRACE}-1122334455667788-01"
    assert headers.get("tracestate") == "vendor=abc"
    assert headers.get("accept") == "*/*"
    assert "b3" not in headers
    assert "x-b3-traceid" not in headers


def test_inject_for_a_new_trace_drops_an_orphan_tracestate() -> None:
    headers = Headers([("tracestate", "vendor=abc")])
    inject(headers, 7, 8, False, None)
    assert headers.get("traceparent") == f"00-{7:032x}-{8:016x}-00"
    assert "tracestate" not in headers


def test_inject_rewrites_b3_where_the_client_used_it() -> None:
    single = Headers([("b3", f"{TRACE}-{SPAN}-1")])
    inject(single, CONTEXT.trace_id, 0xABC, True, CONTEXT)
    assert single.get("b3") == f"{TRACE}-{0xABC:016x}-1-{SPAN}"
    assert single.get("traceparent") == f"00-{TRACE}-{0xABC:016x}-01"

    multi = Headers([("X-B3-TraceId", TRACE), ("X-B3-SpanId", SPAN), ("X-B3-Flags", "1")])
    inject(multi, CONTEXT.trace_id, 0xABC, True, CONTEXT)
    assert multi.get("x-b3-traceid") == TRACE
    assert multi.get("x-b3-spanid") == f"{0xABC:016x}"
    assert multi.get("x-b3-parentspanid") == SPAN
    assert multi.get("x-b3-sampled") == "1"
    assert "x-b3-flags" not in multi
