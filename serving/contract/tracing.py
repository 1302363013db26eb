"""The tracing concern every proxy of the request path reads (router, activator, queue-proxy): where finished
spans go over OTLP/HTTP, and how many root traces are sampled. An empty endpoint turns tracing off, the
default; the controller passes the same settings on to the queue-proxies it starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from serving.config import (
    EnvContract,
    format_float,
    format_str,
    parse_non_negative_duration,
    setting,
)

TRACES_PATH = "/v1/traces"
"""OTLP/HTTP's path for spans (the OpenTelemetry protocol specification)."""


def parse_endpoint(text: str) -> str:
    """An OTLP/HTTP traces URL, or empty (tracing off). A URL without a path gets `/v1/traces`, so both
    `http://collector:4318` and `http://collector:4318/v1/traces` work, as OpenTelemetry's SDKs read
    `OTEL_EXPORTER_OTLP_ENDPOINT` and `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`."""
    value = text.strip()
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an http:// or https:// URL (an OTLP/HTTP collector)")
    if parts.path in ("", "/"):
        return parts._replace(path=TRACES_PATH).geturl()
    return value


def parse_fraction(text: str) -> float:
    """A number from 0 to 1."""
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"{text!r} must be from 0 to 1")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Tracing(EnvContract):
    """Distributed tracing of the request path (docs/tracing.md); off unless `endpoint` is set."""

    endpoint: str = setting("SERVING_TRACING_ENDPOINT", parse_endpoint, "", formatter=format_str)
    """OTLP/HTTP URL finished spans are posted to (`http://otel-collector:4318/v1/traces`); empty: tracing
    is off and costs one None check per request. Needs the `serving[tracing]` extra."""
    sample_rate: float = setting("SERVING_TRACING_SAMPLE_RATE", parse_fraction, 1.0, formatter=format_float)
    """Fraction of new traces recorded (0 to 1), decided by trace id so that every hop agrees; a request that
    carries a trace context follows its caller's decision. 1: every request, since tracing is only on when
    asked for; Knative's config-tracing uses 0.1 for busy clusters."""
    export_interval: float = setting("SERVING_TRACING_EXPORT_INTERVAL", parse_non_negative_duration, 5.0)
    """How often finished spans are sent in one batch (OpenTelemetry's batch processor: 5 s); shorter shows
    traces sooner at the cost of more, smaller posts."""

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint)


OFF: Final = Tracing()
"""Tracing off: the default of every contract that carries the concern."""
