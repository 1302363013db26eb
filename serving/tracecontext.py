"""Trace context on the wire: W3C `traceparent` (and `tracestate`) and Zipkin's B3, read from a request's
headers and rewritten for the next hop, so that each proxy's span is the parent of the next one's.

Plain string work with no OpenTelemetry import: `serving.tracer` calls it only when tracing is on. A client's
`tracestate` passes through untouched (we add no vendor entry); B3 headers are rewritten only where the client
sent them, and `traceparent` is always written, so the next hop and the app can read either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from serving.http import Headers

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
B3: Final = "b3"
"""Zipkin's single header: `{trace id}-{span id}[-{sampling state}[-{parent span id}]]`."""
B3_TRACE_ID: Final = "x-b3-traceid"
B3_SPAN_ID: Final = "x-b3-spanid"
B3_PARENT_SPAN_ID: Final = "x-b3-parentspanid"
B3_SAMPLED: Final = "x-b3-sampled"
B3_FLAGS: Final = "x-b3-flags"

_HEX: Final = frozenset("0123456789abcdef")
_TRACEPARENT_LENGTH: Final = 55
"""`00-` + 32 + `-` + 16 + `-` + 2: version 00's exact length (W3C Trace Context, level 1)."""


@dataclass(frozen=True, slots=True)
class TraceContext:
    """The caller's span as a request carries it."""

    trace_id: int
    span_id: int
    sampled: bool | None
    """The caller's decision; None when it left it to us (B3 without a sampling state)."""


def _hex_id(text: str, digits: int) -> int:
    """A lower-case hex id of exactly `digits` digits, not all zero; 0 when invalid."""
    if len(text) != digits or not _HEX.issuperset(text):
        return 0
    return int(text, 16)


def parse_traceparent(value: str) -> TraceContext | None:
    """A W3C `traceparent`, or None when invalid (then a new trace starts, as the specification says).

    Versions after 00 are read by their first four fields, as the specification asks of a version-00 reader.
    """
    if len(value) < _TRACEPARENT_LENGTH or (len(value) > _TRACEPARENT_LENGTH and value[55] != "-"):
        return None
    version, trace, span, flags = value[:2], value[3:35], value[36:52], value[53:55]
    if value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    if not _HEX.issuperset(version) or version == "ff" or (version == "00" and len(value) != 55):
        return None
    trace_id, span_id = _hex_id(trace, 32), _hex_id(span, 16)
    if not trace_id or not span_id or not _HEX.issuperset(flags):
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))


def _b3_trace_id(text: str) -> int:
    """A B3 trace id: 16 or 32 hex digits (a 64-bit id is the low half of a 128-bit one)."""
    text = text.strip().lower()
    return _hex_id(text, 32) if len(text) == 32 else _hex_id(text, 16)


def _b3_sampled(text: str | None) -> bool | None:
    if text is None:
        return None
    text = text.strip().lower()
    if text in ("1", "d", "true"):
        return True
    if text in ("0", "false"):
        return False
    return None


def parse_b3(value: str) -> TraceContext | None:
    """Zipkin's single `b3` header; None when invalid or when it carries only a sampling state."""
    fields = value.strip().split("-")
    if len(fields) < 2 or len(fields) > 4:
        return None
    trace_id, span_id = _b3_trace_id(fields[0]), _hex_id(fields[1].lower(), 16)
    if not trace_id or not span_id:
        return None
    return TraceContext(trace_id, span_id, _b3_sampled(fields[2]) if len(fields) > 2 else None)


def parse_b3_multi(headers: Headers) -> TraceContext | None:
    """Zipkin's `X-B3-TraceId`/`X-B3-SpanId`/`X-B3-Sampled`/`X-B3-Flags` headers; None when invalid."""
    trace_id = _b3_trace_id(headers.get(B3_TRACE_ID) or "")
    span_id = _hex_id((headers.get(B3_SPAN_ID) or "").strip().lower(), 16)
    if not trace_id or not span_id:
        return None
    sampled = True if (headers.get(B3_FLAGS) or "").strip() == "1" else _b3_sampled(headers.get(B3_SAMPLED))
    return TraceContext(trace_id, span_id, sampled)


def extract(headers: Headers) -> TraceContext | None:
    """The caller's span: `traceparent` first (exactly one), else `b3`, else the `X-B3-*` headers."""
    parents = headers.get_all(TRACEPARENT)
    if len(parents) == 1:
        found = parse_traceparent(parents[0].strip())
        if found is not None:
            return found
    single = headers.get(B3)
    if single is not None:
        found = parse_b3(single)
        if found is not None:
            return found
    if B3_TRACE_ID in headers:
        return parse_b3_multi(headers)
    return None


def inject(headers: Headers, trace_id: int, span_id: int, sampled: bool, parent: TraceContext | None) -> None:
    """Make the span `span_id` the parent of the next hop: `traceparent` always, B3 where the client used it.

    Without a valid caller context the client's `tracestate` belongs to no trace we continue: it is dropped.
    """
    flag = "01" if sampled else "00"
    headers.set(TRACEPARENT, f"00-{trace_id:032x}-{span_id:016x}-{flag}")
    if parent is None and TRACESTATE in headers:
        headers.remove(TRACESTATE)
    if B3 in headers:
        tail = f"-{parent.span_id:016x}" if parent is not None else ""
        headers.set(B3, f"{trace_id:032x}-{span_id:016x}-{flag[1]}{tail}")
    if B3_TRACE_ID in headers or B3_SPAN_ID in headers:
        headers.set(B3_TRACE_ID, f"{trace_id:032x}")
        headers.set(B3_SPAN_ID, f"{span_id:016x}")
        headers.set(B3_SAMPLED, flag[1])
        headers.remove(B3_FLAGS)
        if parent is not None:
            headers.set(B3_PARENT_SPAN_ID, f"{parent.span_id:016x}")
        else:
            headers.remove(B3_PARENT_SPAN_ID)
