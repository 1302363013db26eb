"""A fake OpenTelemetry collector: a real aiohttp server taking OTLP/HTTP `POST /v1/traces` bodies
(`application/x-protobuf` `ExportTraceServiceRequest`), decoded with `opentelemetry.proto`.

Components export their spans to it as they would to a collector; tests read the spans and wait for them.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

Attribute = str | int | float | bool


@dataclass(frozen=True, slots=True)
class CollectedSpan:
    service: str
    """The exporting process's `service.name` resource attribute."""
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    """Hex; empty for a root span."""
    kind: int
    """OTLP's `Span.SpanKind` (2: server)."""
    start_ns: int
    end_ns: int
    error: bool
    """Status code ERROR."""
    attributes: dict[str, Attribute]


def _value(value: AnyValue) -> Attribute | None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    return None


def decode(body: bytes) -> list[CollectedSpan]:
    request = ExportTraceServiceRequest.FromString(body)
    spans = []
    for resource in request.resource_spans:
        service = next(
            (kv.value.string_value for kv in resource.resource.attributes if kv.key == "service.name"), ""
        )
        for scope in resource.scope_spans:
            for span in scope.spans:
                attributes = {kv.key: v for kv in span.attributes if (v := _value(kv.value)) is not None}
                spans.append(
                    CollectedSpan(
                        service=service,
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        kind=span.kind,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        error=span.status.code == span.status.STATUS_CODE_ERROR,
                        attributes=attributes,
                    )
                )
    return spans


class FakeCollector:
    def __init__(self) -> None:
        self.spans: list[CollectedSpan] = []
        self.exports = 0
        self.port = 0
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The traces endpoint, as `SERVING_TRACING_ENDPOINT` takes it."""
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def trace(self, trace_id: str) -> list[CollectedSpan]:
        return [s for s in self.spans if s.trace_id == trace_id]

    async def _export(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415, text=f"unexpected content type {request.content_type}\n")
        body = await request.read()
        if request.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        spans = decode(body)
        async with self._arrived:
            self.exports += 1
            self.spans.extend(spans)
            self._arrived.notify_all()
        reply = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")

    async def wait_for(self, predicate: Callable[[FakeCollector], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate(self)` is true (checked now and after each export)."""

        async def waiting() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: predicate(self))

        try:
            await asyncio.wait_for(waiting(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout:g}s; spans so far: {self.spans}") from None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
