"""The cluster ingress router's contract (`serving router`): every setting it reads from its environment.

The router reads Routes, Revisions and the pods of each revision from the platform; in Serve mode it sends
straight to a ready pod's queue-proxy, in Proxy mode to the activator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from serving.config import (
    EnvContract,
    format_str,
    parse_log_format,
    parse_log_level,
    parse_non_negative_duration,
    parse_port,
    parse_str,
    setting,
)
from serving.contract.controller import parse_domain
from serving.contract.platform import parse_platform_url
from serving.contract.tracing import OFF, Tracing


def parse_address(text: str) -> str:
    """`host:port` (the activator's address as the router reaches it)."""
    value = text.strip()
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not host:port")
    parse_port(port)
    return value


def parse_cidrs(text: str) -> tuple[str, ...]:
    """Comma-separated CIDRs (`10.0.0.0/8,192.168.1.7/32`); empty means none."""
    import ipaddress

    found: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            found.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ValueError(f"{part!r} is not a CIDR") from None
    return tuple(found)


def format_cidrs(value: tuple[str, ...]) -> str:
    return ",".join(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterConfig(EnvContract):
    """Everything `serving router` reads; `to_env()` renders it as the chart sets it."""

    bind_address: str = setting("ROUTER_BIND_ADDRESS", parse_str, "0.0.0.0")
    port: int = setting("ROUTER_PORT", parse_port, 8080)
    """The ingress port clients (or a cloud load balancer) send to."""
    admin_port: int = setting("ROUTER_ADMIN_PORT", parse_port, 9090)
    """`GET /healthz`, `GET /readyz` and `GET /metrics`."""
    platform_url: str = setting(
        "SERVING_PLATFORM_URL", parse_platform_url, "kubernetes", formatter=format_str
    )
    domain: str = setting("SERVING_DOMAIN", parse_domain, "example.com", formatter=format_str)
    """Services answer on `{service}.{namespace}.{domain}`, as the controller writes in their `status.url`."""
    cluster_domain: str = setting("CLUSTER_DOMAIN", parse_domain, "cluster.local", formatter=format_str)
    """DNS suffix of in-cluster addresses: Services also answer on `{service}.{namespace}.svc.{cluster
    domain}` (and `.svc`, `{service}.{namespace}`), the names of the controller's ExternalName Services that
    point here; Kubernetes' default is cluster.local."""
    activator_address: str = setting(
        "ACTIVATOR_ADDRESS", parse_address, "activator.knative-serving.svc:80", formatter=format_str
    )
    trusted_proxies: tuple[str, ...] = setting("TRUSTED_PROXIES", parse_cidrs, (), formatter=format_cidrs)
    """Peers whose `X-Forwarded-*`/`Forwarded` headers are kept (a load balancer in front); empty: none."""
    drain_timeout: float = setting("DRAIN_TIMEOUT", parse_non_negative_duration, 15.0)
    """After SIGTERM, how long readiness fails while new requests are still served, so the Service's endpoints
    and load balancers stop sending here; then the listener closes and in-flight requests finish."""
    log_format: Literal["text", "json"] = setting("LOG_FORMAT", parse_log_format, "json")
    log_level: str = setting("LOG_LEVEL", parse_log_level, "INFO")
    tracing: Tracing = OFF
    """Where the router's spans go (`SERVING_TRACING_*`); off by default."""
