"""The activator's contract: every setting it reads from its environment, one variable per field. The
activator loads it (`activator.config`); a platform builds `ActivatorConfig` and starts it with `to_env()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from serving.autoscaling import DEFAULT, AutoscalerConfig
from serving.config import (
    EnvContract,
    format_int,
    format_str,
    parse_log_format,
    parse_log_level,
    parse_non_negative_duration,
    parse_non_negative_int,
    parse_port,
    parse_str,
    setting,
)
from serving.contract.autoscaler import format_autoscaler_config, parse_autoscaler_config
from serving.contract.platform import parse_platform_url
from serving.contract.tracing import OFF, Tracing


def parse_url(text: str) -> str:
    """An absolute http(s) or ws(s) URL (the platform API or the autoscaler's stat server)."""
    value = text.strip()
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("http", "https", "ws", "wss") or not rest:
        raise ValueError(f"{text!r} is not an absolute http://, https://, ws:// or wss:// URL")
    return value


def parse_positive_int(text: str) -> int:
    value = parse_non_negative_int(text)
    if value == 0:
        raise ValueError("0 is not allowed; it must be 1 or more")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivatorConfig(EnvContract):
    """Everything `serving activator` reads; `to_env()` is its environment as a platform sets it."""

    bind_address: str = setting("ACTIVATOR_BIND_ADDRESS", parse_str, "0.0.0.0")
    """Address both ports listen on: all interfaces in a pod, 127.0.0.1 on one machine."""
    port: int = setting("ACTIVATOR_PORT", parse_port, 8012)
    """Main HTTP/1.1 port: buffered and proxied traffic, and `K-Network-Probe: activator` (Knative's port)."""
    admin_port: int = setting("ACTIVATOR_ADMIN_PORT", parse_port, 9090)
    """Admin port: `GET /metrics` (Prometheus), `GET /healthz` (liveness), `GET /readyz` (readiness).
    9090 is the port Knative's activator serves its metrics on."""
    platform_url: str = setting(
        "SERVING_PLATFORM_URL", parse_platform_url, required=True, formatter=format_str
    )
    """Base URL of the platform API that lists revisions and their pods, or `kubernetes`."""
    autoscaler_url: str = setting("AUTOSCALER_URL", parse_url, required=True, formatter=format_str)
    """Websocket URL of the autoscaler's stat server (`ws://host:port/`); load is pushed every second."""
    index: int = setting("ACTIVATOR_INDEX", parse_non_negative_int, 0)
    """This activator's position among `ACTIVATOR_COUNT` activators; decides which pods it sends to."""
    count: int = setting("ACTIVATOR_COUNT", parse_positive_int, 1, formatter=format_int)
    """How many activators share each revision's pods (subsetting)."""
    queue_depth: int = setting("ACTIVATOR_QUEUE_DEPTH", parse_non_negative_int, 10000)
    """Requests that may wait per revision before new ones get 503 (Knative default 10,000)."""
    queue_per_slot: int = setting("ACTIVATOR_QUEUE_AT_MAX_SCALE", parse_non_negative_int, 1)
    """Once a revision runs as many healthy pods as its max-scale allows, requests that may wait per slot of
    its capacity (containerConcurrency x pods); the rest get 503 with Retry-After at once, so that admitted
    requests keep their latency under overload. Not applied to containerConcurrency 0 or to revisions
    without a max-scale."""
    autoscaler_config: AutoscalerConfig = setting(  # noqa: RUF009  # setting() declares a field
        "AUTOSCALER_CONFIG", parse_autoscaler_config, DEFAULT, formatter=format_autoscaler_config
    )
    """The cluster-wide config-autoscaler settings, as the autoscaler gets them: the activator reads a
    revision's max-scale (its annotation, else the cluster's `max-scale`) the same way."""
    probe_secret: str = setting("SERVING_PROBE_SECRET", parse_str, "")
    """The installation's probe secret: the activator's probes of a revision's pods carry the token derived
    from it (`serving.contract.probe.probe_token`), which the pods' queue-proxies require. Empty: no token."""
    drain_timeout: float = setting("DRAIN_TIMEOUT", parse_non_negative_duration, 30.0)
    """After SIGTERM, how long readiness fails while traffic is still served, so load balancers stop sending
    (30 s, Knative's drain period); then the listener closes and in-flight and queued requests finish."""
    pod_ip: str = setting("POD_IP", parse_str, "")
    """This activator's pod IP; on Kubernetes its position among the activator Service's ready endpoints sets
    `ACTIVATOR_INDEX` and `ACTIVATOR_COUNT`, which are then not read."""
    system_namespace: str = setting("SYSTEM_NAMESPACE", parse_str, "knative-serving")
    """The namespace of the activator's own Service (on Kubernetes)."""
    service_name: str = setting("ACTIVATOR_SERVICE", parse_str, "activator")
    """The name of the activator's own Service (on Kubernetes)."""
    pod_name: str = setting("POD_NAME", parse_str, "activator")
    """Name sent as `pod_name` in stats to the autoscaler; must be unique per activator."""
    log_format: Literal["text", "json"] = setting("LOG_FORMAT", parse_log_format, "json")
    """`json` (one object per line) or `text`."""
    log_level: str = setting("LOG_LEVEL", parse_log_level, "INFO")
    """Lowest level logged: debug, info, warning or error."""
    tracing: Tracing = OFF
    """Where the activator's spans go (`SERVING_TRACING_*`); off by default."""

    def problems(self) -> list[str]:
        """Cross-field checks that a single variable's parser cannot make."""
        found: list[str] = []
        if self.index >= self.count:
            found.append(f"ACTIVATOR_INDEX: {self.index} must be less than ACTIVATOR_COUNT ({self.count})")
        if self.port == self.admin_port:
            found.append(f"ACTIVATOR_ADMIN_PORT: {self.admin_port} is also ACTIVATOR_PORT")
        return found
