"""One server span per proxied request, exported over OTLP/HTTP: the tracing seam of the router, the activator
and the queue-proxy.

`start_tracing` returns None when tracing is off, and the handlers then check only that None: OpenTelemetry is
imported here, at start-up, and only when an endpoint is configured (the `serving[tracing]` extra). When on,
`Tracer.start` reads the caller's context (`serving.tracecontext`), opens a span under it and rewrites the
request's trace headers so that the next hop's span is this one's child; `Span.finish` records what the hop
added and ends it. Spans leave in batches from the SDK's own thread, never on the event loop.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from serving.contract.tracing import Tracing
from serving.http import Headers
from serving.tracecontext import TRACESTATE, extract, inject

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span as OtelSpan
    from opentelemetry.trace import Tracer as OtelTracer

AttributeValue = str | int | float | bool
"""What a span attribute may hold (a subset of OpenTelemetry's: no sequences)."""

EXPORT_TIMEOUT: Final = 5.0
"""Seconds one export (with its retries) may take: a collector that is down delays spans, never a shutdown
by more than this."""

# Attribute names: OpenTelemetry's HTTP semantic conventions, and ours under `serving.`.
METHOD: Final = "http.request.method"
PATH: Final = "url.path"
STATUS: Final = "http.response.status_code"
CLIENT: Final = "client.address"
REVISION: Final = "serving.revision"
NAMESPACE: Final = "serving.namespace"
UPSTREAM: Final = "serving.upstream"
"""`host:port` the hop forwarded to (a pod's queue-proxy, the activator, the app)."""
ACTIVATOR_WAIT: Final = "serving.activator.wait_seconds"
"""Seconds the request waited in the activator for capacity: a cold start, or a revision at its limit."""
QUEUE_WAIT: Final = "serving.queue.wait_seconds"
"""Seconds the request waited in the queue-proxy's breaker for a slot of containerConcurrency."""


def _remote_context(trace_id: int, span_id: int, sampled: bool, state: list[str]) -> Context:
    """The caller's span as OpenTelemetry's parent context."""
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState, set_span_in_context

    remote = SpanContext(
        trace_id,
        span_id,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
        trace_state=TraceState.from_header(state) if state else None,
    )
    return set_span_in_context(NonRecordingSpan(remote))


class TracingUnavailable(RuntimeError):
    """Tracing is configured but OpenTelemetry is not installed."""


class Span:
    """A request's server span while it is in flight."""

    __slots__ = ("_span",)

    def __init__(self, span: OtelSpan) -> None:
        self._span = span

    def finish(self, status: int, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        """Record the response status (5xx marks the span failed, as OpenTelemetry's HTTP server spans do)
        and what the hop measured, then end the span."""
        span = self._span
        if span.is_recording():
            from opentelemetry.trace import StatusCode

            span.set_attribute(STATUS, status)
            if attributes:
                span.set_attributes(attributes)
            if status >= 500:
                span.set_status(StatusCode.ERROR)
        span.end()


class Tracer:
    """Opens the server spans of one component (`name`: `router`, `activator`, `queue-proxy`)."""

    __slots__ = ("_attributes", "_bound", "_kind", "_limit", "_name", "_provider", "_tracer")

    def __init__(
        self, provider: TracerProvider, name: str, sample_rate: float, attributes: Mapping[str, str]
    ) -> None:
        from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
        from opentelemetry.trace import SpanKind

        self._kind = SpanKind.SERVER
        self._provider = provider
        self._tracer: OtelTracer = provider.get_tracer("serving")
        self._name = name
        self._attributes = dict(attributes)
        self._bound = TraceIdRatioBased.get_bound_for_rate(sample_rate)
        self._limit = TraceIdRatioBased.TRACE_ID_LIMIT

    def start(self, headers: Headers, method: str, target: str, client: str = "") -> Span:
        """Open the span of a request under the caller's context, and make it the parent of the next hop by
        rewriting `headers` (the ones forwarded)."""
        parent = extract(headers)
        context = None
        if parent is not None:
            sampled = parent.sampled
            if sampled is None:  # a B3 caller deferred the decision: the same rule as for a new trace
                sampled = parent.trace_id & self._limit < self._bound
            context = _remote_context(parent.trace_id, parent.span_id, sampled, headers.get_all(TRACESTATE))
        attributes: dict[str, AttributeValue] = {**self._attributes, METHOD: method}
        attributes[PATH] = target.partition("?")[0]
        if client:
            attributes[CLIENT] = client
        span = self._tracer.start_span(self._name, context=context, kind=self._kind, attributes=attributes)
        own = span.get_span_context()
        inject(headers, own.trace_id, own.span_id, own.trace_flags.sampled, parent)
        return Span(span)

    def close(self) -> None:
        """Send what is left and stop the exporter thread (blocking: at most `EXPORT_TIMEOUT` per batch)."""
        self._provider.shutdown()


def start_tracing(settings: Tracing, name: str, attributes: Mapping[str, str] | None = None) -> Tracer | None:
    """The component's tracer, or None when tracing is off; raises `TracingUnavailable` when it is on but
    the `serving[tracing]` extra is missing."""
    if not settings.enabled:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as exc:
        raise TracingUnavailable(
            f"SERVING_TRACING_ENDPOINT is set but OpenTelemetry cannot be imported ({exc.name or exc}): "
            "install serving[tracing], or unset it"
        ) from None
    provider = TracerProvider(
        resource=Resource.create({"service.name": name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_rate)),
    )
    exporter = OTLPSpanExporter(endpoint=settings.endpoint, timeout=EXPORT_TIMEOUT)
    delay = max(1, round(settings.export_interval * 1000))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=delay))
    return Tracer(provider, name, settings.sample_rate, attributes or {})


def missing_extra() -> str | None:
    """Why tracing could not start here (the `serving[tracing]` extra is missing), or None; for a command
    that refuses to start anything then."""
    try:
        for module in ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter"):
            importlib.import_module(module)
    except ImportError as exc:
        return f"tracing needs OpenTelemetry ({exc.name or exc} is missing): install serving[tracing]"
    return None
