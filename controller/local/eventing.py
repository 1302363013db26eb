"""Eventing on the local platform: the Brokers, Triggers and sources of the desired state resolved into the
`EventingSpec` the eventing component runs (addresses of Services and Brokers, Kafka settings from
ConfigMaps, webhook secrets from Secrets), with the reason each object is not ready yet, and the feed the
platform API streams it from.

Addresses are the ingress's: a Trigger's events reach a Service through the router and, at zero, the
activator, exactly as any request does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp

from controller.local.sources import SourceRun
from serving.configdata import ConfigData
from serving.contract.eventing import (
    BROKER_HOST,
    WEBHOOK_HOST,
    BrokerSpec,
    DeliverySpec,
    EventingSpec,
    GitHubSpec,
    PingSpec,
    TriggerSpec,
    spec_to_json,
)
from serving.events import (
    KAFKA_CLASS,
    Broker,
    ContainerSource,
    Delivery,
    Destination,
    EventObject,
    GitHubSource,
    PingSource,
    SinkBinding,
    Trigger,
)
from serving.service import Service

DEFAULT_BACKOFF_DELAY = DeliverySpec().backoff_delay
SERVICE_API = "serving.knative.dev/v1"
BROKER_API = "eventing.knative.dev/v1"
KAFKA_BOOTSTRAP = "bootstrap.servers"
KAFKA_PARTITIONS = "default.topic.partitions"
KAFKA_REPLICATION = "default.topic.replication.factor"


def broker_url(namespace: str, name: str, port: int) -> str:
    """A Broker's ingress address on the local platform (`status.address.url` in Knative)."""
    return f"http://{BROKER_HOST}:{port}/{namespace}/{name}"


def internal_broker_url(namespace: str, name: str, port: int) -> str:
    """A Broker's address inside the platform (`K_SINK`, replies, dead letters): the eventing component's
    own port, which any HTTP client reaches (a `*.localhost` name does not resolve everywhere)."""
    return f"http://127.0.0.1:{port}/{namespace}/{name}"


def webhook_url(namespace: str, name: str, port: int) -> str:
    return f"http://{WEBHOOK_HOST}:{port}/{namespace}/{name}"


@dataclass(slots=True)
class Resolved:
    spec: EventingSpec
    not_ready: dict[tuple[str, str, str], str] = field(default_factory=dict)
    """(kind, namespace, name) -> why it is not ready (a missing Service, Broker, ConfigMap or Secret)."""
    bindings: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    """(namespace, Service) -> `K_SINK` and `K_CE_OVERRIDES` of the SinkBinding whose subject it is."""
    container_sources: list[SourceRun] = field(default_factory=list)


class _Resolver:
    def __init__(
        self,
        events: Sequence[EventObject],
        services: Sequence[Service],
        configs: Sequence[ConfigData],
        port: int,
        broker_port: int,
    ) -> None:
        self.port = port
        self.broker_port = broker_port
        self.services = {s.key for s in services}
        self.brokers = {(o.namespace, o.name): o for o in events if isinstance(o, Broker)}
        self.configs = {c.key: c for c in configs}
        self.not_ready: dict[tuple[str, str, str], str] = {}

    def address(self, owner: EventObject, dest: Destination, field_name: str) -> str | None:
        """`dest` as a URL, or None (and the owner's reason) while its ref does not resolve."""
        if dest.ref is None:
            return dest.uri
        ref = dest.ref
        base: str | None = None
        found = (ref.namespace, ref.name)
        if ref.kind == "Service" and ref.api_version == SERVICE_API and found in self.services:
            base = f"http://{ref.name}.{ref.namespace}.localhost:{self.port}"
        elif ref.kind == "Broker" and ref.api_version == BROKER_API and found in self.brokers:
            base = internal_broker_url(ref.namespace, ref.name, self.broker_port)
        if base is None:
            self.not_ready.setdefault(
                owner.key, f"{field_name}: {ref.kind} {ref.namespace}/{ref.name} not found"
            )
            return None
        if dest.uri:
            return base.rstrip("/") + "/" + dest.uri.lstrip("/")
        return base

    def delivery(self, owner: EventObject, own: Delivery | None, broker: Delivery | None) -> DeliverySpec:
        chosen = own or broker
        if chosen is None:
            return DeliverySpec()
        sink = None
        if chosen.dead_letter_sink is not None:
            sink = self.address(owner, chosen.dead_letter_sink, "spec.delivery.deadLetterSink")
        return DeliverySpec(
            retry=chosen.retry or 0,
            backoff_policy=chosen.backoff_policy,
            backoff_delay=chosen.backoff_delay if chosen.backoff_delay is not None else DEFAULT_BACKOFF_DELAY,
            timeout=chosen.timeout,
            dead_letter_sink=sink,
        )

    def broker(self, broker: Broker) -> BrokerSpec:
        if broker.broker_class != KAFKA_CLASS:
            return BrokerSpec(broker.namespace, broker.name, broker.broker_class)
        ref = broker.config
        config = self.configs.get(("ConfigMap", ref.namespace, ref.name)) if ref is not None else None
        if ref is None or config is None:
            where = f"ConfigMap {ref.namespace}/{ref.name}" if ref is not None else "a ConfigMap"
            self.not_ready[broker.key] = (
                f"spec.config: {where} not found (it gives the Kafka {KAFKA_BOOTSTRAP})"
            )
            return BrokerSpec(broker.namespace, broker.name, KAFKA_CLASS, ready=False)
        data = {k: v.decode(errors="replace").strip() for k, v in config.data.items()}
        servers = data.get(KAFKA_BOOTSTRAP, "")
        if not servers:
            self.not_ready[broker.key] = (
                f"spec.config: ConfigMap {ref.namespace}/{ref.name} has no {KAFKA_BOOTSTRAP}"
            )
            return BrokerSpec(broker.namespace, broker.name, KAFKA_CLASS, ready=False)
        try:
            partitions = int(data.get(KAFKA_PARTITIONS, "10"))
            replication = int(data.get(KAFKA_REPLICATION, "1"))
        except ValueError as exc:
            self.not_ready[broker.key] = f"spec.config: ConfigMap {ref.namespace}/{ref.name}: {exc}"
            return BrokerSpec(broker.namespace, broker.name, KAFKA_CLASS, ready=False)
        return BrokerSpec(broker.namespace, broker.name, KAFKA_CLASS, servers, partitions, replication)

    def secret(self, owner: GitHubSource) -> bytes | None:
        ref = owner.secret_token
        secret = self.configs.get(("Secret", owner.namespace, ref.name))
        value = secret.data.get(ref.key) if secret is not None else None
        if value is None:
            self.not_ready[owner.key] = (
                f"spec.secretToken: Secret {owner.namespace}/{ref.name} key {ref.key!r} not found"
            )
        return value


def resolve(
    events: Sequence[EventObject],
    services: Sequence[Service],
    configs: Sequence[ConfigData],
    port: int,
    broker_port: int,
) -> Resolved:
    """The spec of `events` with every address resolved: Services through the ingress `port`, Brokers at
    the eventing component's `broker_port`."""
    r = _Resolver(events, services, configs, port, broker_port)
    brokers = [r.broker(b) for b in r.brokers.values()]
    known = {b.key for b in brokers if b.ready}
    triggers: list[TriggerSpec] = []
    pings: list[PingSpec] = []
    githubs: list[GitHubSpec] = []
    bindings: dict[tuple[str, str], dict[str, str]] = {}
    sources: list[SourceRun] = []
    for obj in events:
        if isinstance(obj, Trigger):
            owner = r.brokers.get((obj.namespace, obj.broker))
            if (obj.namespace, obj.broker) not in known:
                r.not_ready.setdefault(obj.key, f"spec.broker: Broker {obj.namespace}/{obj.broker} not ready")
            subscriber = r.address(obj, obj.subscriber, "spec.subscriber")
            chosen = obj.delivery or (owner.delivery if owner is not None else None)
            delivery = r.delivery(obj, obj.delivery, owner.delivery if owner is not None else None)
            if (
                chosen is not None
                and chosen.dead_letter_sink is not None
                and delivery.dead_letter_sink is None
            ):
                subscriber = None  # no delivery before the dead letters have somewhere to go: events wait
            triggers.append(
                TriggerSpec(
                    obj.namespace,
                    obj.name,
                    obj.broker,
                    subscriber,
                    dict(obj.filter_attributes),
                    obj.filters,
                    delivery,
                )
            )
        elif isinstance(obj, PingSource):
            pings.append(
                PingSpec(
                    obj.namespace,
                    obj.name,
                    obj.schedule,
                    obj.timezone,
                    obj.content_type,
                    obj.data,
                    r.address(obj, obj.sink, "spec.sink"),
                    dict(obj.ce_overrides),
                )
            )
        elif isinstance(obj, GitHubSource):
            githubs.append(
                GitHubSpec(
                    obj.namespace,
                    obj.name,
                    obj.owner_and_repository,
                    obj.event_types,
                    r.secret(obj),
                    r.address(obj, obj.sink, "spec.sink"),
                    dict(obj.ce_overrides),
                )
            )
        elif isinstance(obj, SinkBinding | ContainerSource):
            sink = r.address(obj, obj.sink, "spec.sink")
            if sink is None:
                continue
            binding = binding_env(sink, obj.ce_overrides)
            if isinstance(obj, ContainerSource):
                template = json.dumps(obj.template, sort_keys=True, default=str)
                sources.append(SourceRun(obj, binding, template))
            elif obj.subject.kind == "Service" and (obj.subject.namespace, obj.subject.name) in r.services:
                bindings[(obj.subject.namespace, obj.subject.name)] = binding
            else:
                subject = obj.subject
                r.not_ready[obj.key] = (
                    f"spec.subject: {subject.kind} {subject.namespace}/{subject.name} not found"
                )
    spec = EventingSpec(tuple(brokers), tuple(triggers), tuple(pings), tuple(githubs))
    return Resolved(spec, r.not_ready, bindings, sources)


def binding_env(sink: str, overrides: Mapping[str, str]) -> dict[str, str]:
    """What a SinkBinding puts in its subject's containers: `K_SINK`, and `K_CE_OVERRIDES` (Knative's JSON
    `{"extensions": {...}}`) when it overrides any attribute."""
    env = {"K_SINK": sink}
    if overrides:
        env["K_CE_OVERRIDES"] = json.dumps({"extensions": dict(overrides)}, separators=(",", ":"))
    return env


class EventingFeed:
    """The current `EventingSpec` for the platform API's watch: each change is one JSON line, sent to every
    watcher (a watcher that falls behind gets the newest)."""

    def __init__(self) -> None:
        self._line = (json.dumps(spec_to_json(EventingSpec())) + "\n").encode()
        self._version = 1
        self._changed = asyncio.Condition()

    async def set(self, spec: EventingSpec) -> None:
        line = (json.dumps(spec_to_json(spec)) + "\n").encode()
        if line == self._line:
            return
        async with self._changed:
            self._line = line
            self._version += 1
            self._changed.notify_all()

    async def lines(self) -> AsyncIterator[bytes]:
        sent = 0
        while True:
            async with self._changed:
                await self._changed.wait_for(partial(self._newer, sent))
                sent, line = self._version, self._line
            yield line

    def _newer(self, version: int) -> bool:
        return self._version != version


class EventingView:
    """What `serving status` shows of Eventing: the desired objects with their addresses and why any is not
    ready, joined with the counts the eventing component reports on its admin `/status`."""

    def __init__(
        self,
        port: int,
        processes: Callable[[str, str], dict[str, object] | None] = lambda ns, n: None,
        *,
        broker_port: int | None = None,
    ) -> None:
        self.port = port
        """The ingress port every address uses."""
        self.broker_port = broker_port
        """The eventing component's port: Brokers' addresses inside the platform."""
        self._processes = processes
        self.events: Sequence[EventObject] = ()
        self.resolved = Resolved(EventingSpec())
        self.counts: dict[str, Any] = {}

    def set(self, events: Sequence[EventObject], resolved: Resolved) -> None:
        self.events = events
        self.resolved = resolved

    async def scrape(self, session: aiohttp.ClientSession, url: str) -> None:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=1.0)) as resp:
                if resp.status == 200:
                    self.counts = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            self.counts = {}

    def entry(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The status entry of one object (as in `json`), None when it is not shown there."""
        doc = self.json()
        group = {"Broker": "brokers", "Trigger": "triggers"}.get(kind, "sources")
        return next(
            (
                e
                for e in doc[group]
                if (e["namespace"], e["name"]) == (namespace, name) and e.get("kind", kind) == kind
            ),
            None,
        )

    def json(self) -> dict[str, Any]:
        reasons = self.resolved.not_ready
        spec = self.resolved.spec
        counted = {
            kind: {(c["namespace"], c["name"]): c for c in self.counts.get(kind, ())}
            for kind in ("brokers", "triggers", "sources")
        }
        brokers = [
            {
                "namespace": o.namespace,
                "name": o.name,
                "class": o.broker_class,
                "url": broker_url(o.namespace, o.name, self.port),
                "address": (
                    internal_broker_url(o.namespace, o.name, self.broker_port)
                    if self.broker_port is not None
                    else None
                ),
                "accepted": counted["brokers"].get((o.namespace, o.name), {}).get("accepted"),
                "reason": reasons.get(o.key, ""),
            }
            for o in self.events
            if isinstance(o, Broker)
        ]
        subscribers = {t.key: t.subscriber for t in spec.triggers}
        triggers = []
        for o in self.events:
            if not isinstance(o, Trigger):
                continue
            counts = counted["triggers"].get((o.namespace, o.name), {})
            triggers.append(
                {
                    "namespace": o.namespace,
                    "name": o.name,
                    "broker": o.broker,
                    "subscriber": subscribers.get((o.namespace, o.name)),
                    **{
                        k: counts.get(k)
                        for k in ("delivered", "retried", "dead_lettered", "dropped", "in_flight")
                    },
                    "reason": reasons.get(o.key, "") or counts.get("last_error", ""),
                }
            )
        sinks = {(p.namespace, p.name): p.sink for p in spec.pings}
        sinks.update({(g.namespace, g.name): g.sink for g in spec.githubs})
        sinks.update(
            {
                (r.source.namespace, r.source.name): r.binding["K_SINK"]
                for r in self.resolved.container_sources
            }
        )
        bound = {key: env["K_SINK"] for key, env in self.resolved.bindings.items()}
        sources = []
        for o in self.events:
            if isinstance(o, SinkBinding):
                subject = (o.subject.namespace, o.subject.name)
                sinks[(o.namespace, o.name)] = bound.get(subject)
            if isinstance(o, ContainerSource | SinkBinding):
                process = self._processes(o.namespace, o.name) if isinstance(o, ContainerSource) else None
                sources.append(
                    {
                        "namespace": o.namespace,
                        "name": o.name,
                        "kind": o.kind,
                        "sink": sinks.get((o.namespace, o.name)),
                        "pid": process.get("pid") if process else None,
                        "restarts": process.get("restarts") if process else None,
                        "reason": reasons.get(o.key, "")
                        or (str(process.get("reason") or "") if process else ""),
                    }
                )
            if not isinstance(o, PingSource | GitHubSource):
                continue
            counts = counted["sources"].get((o.namespace, o.name), {})
            entry: dict[str, Any] = {
                "namespace": o.namespace,
                "name": o.name,
                "kind": o.kind,
                "sink": sinks.get((o.namespace, o.name)),
                "sent": counts.get("sent"),
                "failed": counts.get("failed"),
                "reason": reasons.get(o.key, ""),
            }
            if isinstance(o, GitHubSource):
                entry["url"] = webhook_url(o.namespace, o.name, self.port)
            sources.append(entry)
        return {"brokers": brokers, "triggers": triggers, "sources": sources}
