"""The eventing component's contract: its settings (environment variables), and the resolved Eventing objects
a platform hands it (`EventingSpec`, JSON on the wire): Brokers, Triggers with their subscriber addresses
already resolved, and the sources the component runs itself (PingSource, GitHubSource).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from serving.config import (
    EnvContract,
    format_str,
    parse_log_format,
    parse_log_level,
    parse_port,
    parse_str,
    setting,
)
from serving.contract.platform import parse_platform_url
from serving.contract.router import parse_address
from serving.events import Filter

BROKER_HOST = "broker-ingress.localhost"
"""The Host of every Broker's ingress on the local platform: `http://broker-ingress.localhost:8080/ns/name`."""
WEBHOOK_HOST = "webhook.localhost"
"""The Host of the webhook sources (GitHubSource) on the local platform: `.../ns/name`."""
TOKEN_HEADER = "Serving-Eventing-Token"
"""The header that carries `EVENTING_TOKEN` on the platform's eventing watch (the spec holds secrets)."""


def parse_optional_address(text: str) -> str:
    """`host:port`, or empty for none."""
    return parse_address(text) if text.strip() else ""


def split_address(address: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) as (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventingConfig(EnvContract):
    """Everything `serving eventing` reads; `to_env()` is its environment as a platform sets it."""

    bind_address: str = setting("EVENTING_BIND_ADDRESS", parse_str, "0.0.0.0")
    """Address both ports listen on: all interfaces in a pod, 127.0.0.1 on one machine."""
    port: int = setting("EVENTING_PORT", parse_port, 8080)
    """Broker ingress (`POST /{namespace}/{broker}`) and webhook sources, by Host."""
    admin_port: int = setting("EVENTING_ADMIN_PORT", parse_port, 9090)
    """`GET /metrics` (Prometheus), `/healthz`, `/readyz` and `/status` (delivery counts per Trigger)."""
    data_dir: str = setting("EVENTING_DATA_DIR", parse_str, required=True, formatter=format_str)
    """Folder of the embedded Brokers' logs and the Triggers' positions; must outlive the process."""
    platform_url: str = setting(
        "SERVING_PLATFORM_URL", parse_platform_url, required=True, formatter=format_str
    )
    """Base URL of the platform API that serves the Eventing objects (`GET /v1/eventing?watch=true`)."""
    token: str = setting("EVENTING_TOKEN", parse_str, "")
    """Sent as `Serving-Eventing-Token` on the watch of the Eventing objects."""
    ingress_address: str = setting("INGRESS_ADDRESS", parse_optional_address, "", formatter=format_str)
    """`host:port` of the platform's router: events for a Knative Service (an address the platform resolved
    from a `ref` to a Service, listed in the spec's `service_hosts`) connect there, keeping the Service's
    Host; empty: they connect to the address's own host, as any URL (DNS)."""
    log_format: Literal["text", "json"] = setting("LOG_FORMAT", parse_log_format, "json")
    """`json` (one object per line) or `text`."""
    log_level: str = setting("LOG_LEVEL", parse_log_level, "INFO")
    """Lowest level logged: debug, info, warning or error."""

    def problems(self) -> list[str]:
        if self.port == self.admin_port:
            return [f"EVENTING_ADMIN_PORT: {self.admin_port} is also EVENTING_PORT"]
        return []


@dataclass(frozen=True, slots=True)
class DeliverySpec:
    """A Trigger's delivery, merged over its Broker's, with the dead-letter sink resolved to a URL."""

    retry: int = 0
    backoff_policy: Literal["exponential", "linear"] = "exponential"
    backoff_delay: float = 0.2
    """Seconds before the first retry (`backoffDelay`); 0.2 s when neither the Trigger nor its Broker says."""
    timeout: float | None = None
    dead_letter_sink: str | None = None


@dataclass(frozen=True, slots=True)
class BrokerSpec:
    namespace: str
    name: str
    broker_class: str
    bootstrap_servers: str | None = None
    """The Kafka class's `bootstrap.servers`, read from the ConfigMap of `spec.config`."""
    partitions: int = 10
    replication_factor: int = 1
    ready: bool = True
    """False while the Broker cannot run (a Kafka Broker without its ConfigMap): its log and its Triggers'
    positions are kept, and its ingress answers 503."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    namespace: str
    name: str
    broker: str
    subscriber: str | None
    """Resolved address; None while its ref does not resolve (delivery waits, events are kept)."""
    filter_attributes: Mapping[str, str] = field(default_factory=dict)
    filters: tuple[Filter, ...] = ()
    delivery: DeliverySpec = field(default_factory=DeliverySpec)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class PingSpec:
    namespace: str
    name: str
    schedule: str
    timezone: str | None
    content_type: str | None
    data: bytes
    sink: str | None
    ce_overrides: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, repr=False)
class GitHubSpec:
    namespace: str
    name: str
    owner_and_repository: str
    event_types: tuple[str, ...]
    secret: bytes | None
    """The webhook secret's value; None while its Secret or key is missing (posts are refused)."""
    sink: str | None
    ce_overrides: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"GitHubSpec({self.namespace}/{self.name}, {self.owner_and_repository})"


@dataclass(frozen=True, slots=True)
class EventingSpec:
    brokers: tuple[BrokerSpec, ...] = ()
    triggers: tuple[TriggerSpec, ...] = ()
    pings: tuple[PingSpec, ...] = ()
    githubs: tuple[GitHubSpec, ...] = ()
    service_hosts: tuple[str, ...] = ()
    """The hosts (`host[:port]` as the URLs write them) of the addresses the platform resolved from a `ref`
    to a Knative Service: with `INGRESS_ADDRESS` set, events for them connect to the platform's router."""
    broker_hosts: tuple[str, ...] = ()
    """The hosts (`host[:port]`) of the Brokers' addresses inside the platform: events for them (replies,
    dead letters, sources' sinks) connect to the eventing component's own port rather than through the
    cluster's DNS and Service proxy."""


def filter_to_json(f: Filter) -> dict[str, Any]:
    return {
        "dialect": f.dialect,
        "attributes": dict(f.attributes),
        "children": [filter_to_json(c) for c in f.children],
    }


def filter_from_json(data: Mapping[str, Any]) -> Filter:
    return Filter(
        data["dialect"],
        {str(k): str(v) for k, v in data.get("attributes", {}).items()},
        tuple(filter_from_json(c) for c in data.get("children", ())),
    )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def spec_to_json(spec: EventingSpec) -> dict[str, Any]:
    return {
        "brokers": [
            {
                "namespace": b.namespace,
                "name": b.name,
                "class": b.broker_class,
                "bootstrap_servers": b.bootstrap_servers,
                "partitions": b.partitions,
                "replication_factor": b.replication_factor,
                "ready": b.ready,
            }
            for b in spec.brokers
        ],
        "triggers": [
            {
                "namespace": t.namespace,
                "name": t.name,
                "broker": t.broker,
                "subscriber": t.subscriber,
                "filter_attributes": dict(t.filter_attributes),
                "filters": [filter_to_json(f) for f in t.filters],
                "delivery": {
                    "retry": t.delivery.retry,
                    "backoff_policy": t.delivery.backoff_policy,
                    "backoff_delay": t.delivery.backoff_delay,
                    "timeout": t.delivery.timeout,
                    "dead_letter_sink": t.delivery.dead_letter_sink,
                },
            }
            for t in spec.triggers
        ],
        "pings": [
            {
                "namespace": p.namespace,
                "name": p.name,
                "schedule": p.schedule,
                "timezone": p.timezone,
                "content_type": p.content_type,
                "data": _b64(p.data),
                "sink": p.sink,
                "ce_overrides": dict(p.ce_overrides),
            }
            for p in spec.pings
        ],
        "githubs": [
            {
                "namespace": g.namespace,
                "name": g.name,
                "owner_and_repository": g.owner_and_repository,
                "event_types": list(g.event_types),
                "secret": _b64(g.secret),
                "sink": g.sink,
                "ce_overrides": dict(g.ce_overrides),
            }
            for g in spec.githubs
        ],
        "service_hosts": list(spec.service_hosts),
        "broker_hosts": list(spec.broker_hosts),
    }


def spec_from_json(data: Mapping[str, Any]) -> EventingSpec:
    return EventingSpec(
        brokers=tuple(
            BrokerSpec(
                b["namespace"],
                b["name"],
                b["class"],
                b.get("bootstrap_servers"),
                int(b.get("partitions", 10)),
                int(b.get("replication_factor", 1)),
                bool(b.get("ready", True)),
            )
            for b in data.get("brokers", ())
        ),
        triggers=tuple(
            TriggerSpec(
                t["namespace"],
                t["name"],
                t["broker"],
                t.get("subscriber"),
                {str(k): str(v) for k, v in t.get("filter_attributes", {}).items()},
                tuple(filter_from_json(f) for f in t.get("filters", ())),
                DeliverySpec(**t.get("delivery", {})),
            )
            for t in data.get("triggers", ())
        ),
        pings=tuple(
            PingSpec(
                p["namespace"],
                p["name"],
                p["schedule"],
                p.get("timezone"),
                p.get("content_type"),
                _unb64(p.get("data")) or b"",
                p.get("sink"),
                {str(k): str(v) for k, v in p.get("ce_overrides", {}).items()},
            )
            for p in data.get("pings", ())
        ),
        githubs=tuple(
            GitHubSpec(
                g["namespace"],
                g["name"],
                g["owner_and_repository"],
                tuple(g.get("event_types", ())),
                _unb64(g.get("secret")),
                g.get("sink"),
                {str(k): str(v) for k, v in g.get("ce_overrides", {}).items()},
            )
            for g in data.get("githubs", ())
        ),
        service_hosts=tuple(str(h) for h in data.get("service_hosts", ())),
        broker_hosts=tuple(str(h) for h in data.get("broker_hosts", ())),
    )
