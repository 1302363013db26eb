"""`serving up --trace`: a small OTLP/HTTP receiver inside `serving up` that the router, the activator and the
queue-proxies export their spans to, printing each finished trace as a few event lines (hop, duration, waits).

A trace is taken as finished once no span of it has arrived for `quiet` seconds (the components export in
batches, each on its own schedule). Needs the `serving[tracing]` extra (OpenTelemetry's protobuf messages),
imported only when the flag is given.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from serving.contract.tracing import TRACES_PATH
from serving.tracer import ACTIVATOR_WAIT, QUEUE_WAIT, STATUS

PROTOBUF: Final = "application/x-protobuf"
_WAITS: Final = ((ACTIVATOR_WAIT, "waited"), (QUEUE_WAIT, "queued"))
"""Wait attributes shown after a hop's duration, with their label."""


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_id: str
    """Hex id of the parent span; empty for a root."""
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, str | int | float | bool]

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def decode(body: bytes) -> list[ReceivedSpan]:
    """The spans of one OTLP `ExportTraceServiceRequest`."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest.FromString(body)
    found = []
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                attributes: dict[str, str | int | float | bool] = {}
                for kv in span.attributes:
                    kind = kv.value.WhichOneof("value")
                    if kind in ("string_value", "int_value", "double_value", "bool_value"):
                        attributes[kv.key] = getattr(kv.value, kind)
                found.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        name=span.name,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=attributes,
                    )
                )
    return found


def _line(span: ReceivedSpan, depth: int) -> str:
    parts = [f"{'  ' * depth}{span.name:<{16 - 2 * depth}} {span.seconds * 1000:9.1f} ms"]
    status = span.attributes.get(STATUS)
    if status is not None:
        parts.append(f"status {status}")
    for key, label in _WAITS:
        value = span.attributes.get(key)
        if isinstance(value, float) and value > 0:
            parts.append(f"{label} {value * 1000:.1f} ms")
    return "  ".join(parts)


def render(spans: list[ReceivedSpan]) -> list[str]:
    """A trace as lines: a header, then each span under its parent, in start order."""
    children: dict[str, list[ReceivedSpan]] = {}
    ids = {s.span_id for s in spans}
    for span in sorted(spans, key=lambda s: s.start_ns):
        children.setdefault(span.parent_id if span.parent_id in ids else "", []).append(span)
    total = (max(s.end_ns for s in spans) - min(s.start_ns for s in spans)) / 1e9
    lines = [f"trace {spans[0].trace_id}: {len(spans)} span(s), {total * 1000:.1f} ms"]

    def walk(parent: str, depth: int) -> None:
        for span in children.get(parent, []):
            lines.append(f"  {_line(span, depth)}")
            walk(span.span_id, depth + 1)

    walk("", 0)
    return lines


@dataclass(slots=True)
class _Pending:
    spans: list[ReceivedSpan] = field(default_factory=list)
    last: float = 0.0


class TraceReceiver:
    """Collects spans per trace and hands each finished trace's lines to `emit`."""

    def __init__(
        self, emit: Callable[[str], None], *, quiet: float = 1.5, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.emit = emit
        """Where each line goes (the live view's events, once it exists)."""
        self._quiet = quiet
        self._now = now
        self._pending: dict[str, _Pending] = {}

    def add(self, spans: list[ReceivedSpan]) -> None:
        now = self._now()
        for span in spans:
            pending = self._pending.setdefault(span.trace_id, _Pending())
            pending.spans.append(span)
            pending.last = now

    def flush(self, *, everything: bool = False) -> None:
        """Emit the traces quiet for `quiet` seconds (all of them with `everything`)."""
        now = self._now()
        for trace_id in [t for t, p in self._pending.items() if everything or now - p.last >= self._quiet]:
            for line in render(self._pending.pop(trace_id).spans):
                self.emit(line)

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        try:
            self.add(decode(body))
        except Exception as exc:  # a malformed export: the sender is told, the receiver keeps going
            return web.Response(status=400, text=f"not an OTLP ExportTraceServiceRequest: {exc}\n")
        return web.Response(body=b"", content_type=PROTOBUF)  # an empty ExportTraceServiceResponse

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(TRACES_PATH, self._receive)
        return app

    async def run(self, interval: float = 0.25) -> None:
        """Emit finished traces until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.flush()
