"""The queue-proxy's contract: the settings it reads from Knative's environment variables plus a few of our
own, one frozen dataclass per concern. The queue-proxy loads them (`queueproxy.config`); a platform builds
`Config` and starts the sidecar with `Config.to_env()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from serving.config import (
    EnvContract,
    format_float,
    parse_bool,
    parse_log_format,
    parse_log_level,
    parse_non_negative_duration,
    parse_non_negative_float,
    parse_non_negative_int,
    parse_port,
    parse_str,
    setting,
)
from serving.container import H2C
from serving.contract.probe import ProbeSpec, format_probe, parse_probe
from serving.contract.tracing import OFF, Tracing
from serving.template import RevisionTemplate


def parse_positive_seconds(text: str) -> float:
    value = parse_non_negative_float(text)
    if value == 0:
        raise ValueError("must be more than 0 seconds")
    return value


def parse_user_protocol(text: str) -> Literal["", "http1", "h2c"]:
    lowered = text.strip().lower()
    if lowered == "":
        return ""
    if lowered == "http1":
        return "http1"
    if lowered == "h2c":
        return "h2c"
    raise ValueError(f"{text!r} is not a protocol (use http1 or h2c, or leave it empty)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity(EnvContract):
    """Which pod of which revision this queue-proxy serves; names appear in stats and metrics."""

    namespace: str = setting("SERVING_NAMESPACE", parse_str, required=True)
    """Namespace of the revision."""
    configuration: str = setting("SERVING_CONFIGURATION", parse_str, required=True)
    """Configuration that created the revision."""
    revision: str = setting("SERVING_REVISION", parse_str, required=True)
    """Revision name."""
    pod: str = setting("SERVING_POD", parse_str, required=True)
    """Pod name; the `pod_name` of every reported `Stat`."""
    pod_ip: str = setting("SERVING_POD_IP", parse_str, required=True)
    """Pod IP address (required by Knative's contract; informational here)."""
    service: str = setting("SERVING_SERVICE", parse_str, "")
    """Service that owns the revision, empty for a bare Configuration."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxySettings(EnvContract):
    """How requests reach the app: admission, timeouts and readiness."""

    container_concurrency: int = setting("CONTAINER_CONCURRENCY", parse_non_negative_int, 0)
    """Requests allowed in the app at once; 0 means no limit and no breaker (Knative default)."""
    user_port: int = setting("USER_PORT", parse_port, 8080)
    """Port of the app on 127.0.0.1 (Knative default 8080)."""
    timeout: float = setting(
        "REVISION_TIMEOUT_SECONDS", parse_positive_seconds, 300.0, formatter=format_float
    )
    """Total seconds for a request, queue wait included, before a 504 (Knative default 300 s)."""
    response_start_timeout: float = setting(
        "REVISION_RESPONSE_START_TIMEOUT_SECONDS", parse_non_negative_float, 0.0
    )
    """Seconds the app may take to start its response (headers); 0 means only the total timeout applies."""
    idle_timeout: float = setting("REVISION_IDLE_TIMEOUT_SECONDS", parse_non_negative_float, 0.0)
    """Seconds the app may stay silent while responding; 0 turns the limit off (Knative default)."""
    readiness_probe: ProbeSpec = setting(  # noqa: RUF009  # setting() declares a field, like dataclasses.field
        "SERVING_READINESS_PROBE", parse_probe, ProbeSpec(), formatter=format_probe
    )
    """The app's readiness probe as Kubernetes Probe JSON; default TCP on the user port, aggressive."""
    user_protocol: Literal["", "http1", "h2c"] = setting(
        "SERVING_USER_PROTOCOL", parse_user_protocol, "", formatter=str
    )
    """What the app speaks: `h2c` when its container port is named so (HTTP/2 cleartext), `http1` otherwise.
    It decides the protocol of requests to the app and of an `httpGet` probe. Empty (a platform that does not
    say, such as Knative's controller): each request goes to the app in the protocol it arrived in."""
    probe_token: str = setting("SERVING_PROBE_TOKEN", parse_str, "")
    """When set, probe-like requests (kube-probe, `K-Network-Probe`...) are answered here only if they carry
    it in `K-Network-Probe-Token`; any other is proxied to the app. Empty: Knative's rule (any of them)."""

    @property
    def queue_depth(self) -> int:
        """Requests allowed to wait for a slot: 10 x containerConcurrency (Knative's breaker queue)."""
        return 10 * self.container_concurrency


@dataclass(frozen=True, slots=True, kw_only=True)
class Ports(EnvContract):
    """Listening ports; overridable so that several pods can share one machine."""

    bind_address: str = setting("QUEUE_BIND_ADDRESS", parse_str, "0.0.0.0")
    """Address every server binds; all interfaces in a pod, 127.0.0.1 for local pods."""
    serving: int = setting("QUEUE_SERVING_PORT", parse_port, 8012)
    """Main HTTP/1.1 port that proxies to the app (Knative 8012)."""
    admin: int = setting("QUEUE_ADMIN_PORT", parse_port, 8022)
    """Admin port with `GET /wait-for-drain` (Knative 8022)."""
    stats: int = setting("QUEUE_STATS_PORT", parse_port, 9090)
    """Autoscaler stats port: protobuf `Stat` on `GET /metrics` (Knative 9090)."""
    metrics: int = setting("QUEUE_METRICS_PORT", parse_port, 9091)
    """Prometheus request metrics port (Knative 9091)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DrainSettings(EnvContract):
    """Graceful shutdown after SIGTERM."""

    quiet_period: float = setting("DRAIN_QUIET_PERIOD", parse_non_negative_duration, 30.0)
    """Keep serving until no request arrived for this long (Knative hard-codes 30 s)."""
    websocket_timeout: float = setting("DRAIN_WEBSOCKET_TIMEOUT", parse_non_negative_duration, 60.0)
    """How long open websockets (upgraded connections) may last once draining ends (Knative 60 s)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSettings(EnvContract):
    """Process logging; only `main` applies these."""

    request_log: bool = setting("REQUEST_LOG", parse_bool, False)
    """Write one JSON line per proxied request to stderr; off by default (costs CPU per request)."""
    log_format: Literal["text", "json"] = setting("LOG_FORMAT", parse_log_format, "text")
    """`text` for people, `json` for log collectors."""
    log_level: str = setting("LOG_LEVEL", parse_log_level, "INFO")
    """Minimum level of process logs."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Config(EnvContract):
    """Everything the queue-proxy reads; `to_env()` is the sidecar's environment as a platform sets it."""

    identity: Identity
    proxy: ProxySettings
    ports: Ports
    drain: DrainSettings
    log: LogSettings
    tracing: Tracing = OFF
    """Where the queue-proxy's spans go (`SERVING_TRACING_*`); off by default."""


def proxy_settings(
    template: RevisionTemplate, *, user_port: int, readiness_probe: str, probe_token: str = ""
) -> ProxySettings:
    """The request-path settings of a revision's queue-proxy, from its template (as every platform sets
    them): concurrency, the three timeouts, the user port and protocol, the readiness probe (as JSON, may be
    empty) and the revision's probe token."""
    return ProxySettings(
        container_concurrency=template.container_concurrency,
        user_port=user_port,
        timeout=float(template.timeout_seconds),
        response_start_timeout=float(template.response_start_timeout_seconds or 0),
        idle_timeout=float(template.idle_timeout_seconds or 0),
        readiness_probe=parse_probe(readiness_probe),
        user_protocol="h2c" if template.container.protocol == H2C else "http1",
        probe_token=probe_token,
    )
