"""Eventing objects resolved into the `EventingSpec` the eventing component runs, on either platform:
addresses of Services and Brokers (where they answer is the platform's, `Addresses`), Kafka settings from
ConfigMaps, webhook secrets from Secrets, with the reason each object is not ready yet; and the feed that
streams the spec to the eventing component (`GET /v1/eventing?watch=true`, one JSON line per change).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp import web

from serving.configdata import ConfigData
from serving.contract.eventing import (
    TOKEN_HEADER,
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

log = logging.getLogger(__name__)

DEFAULT_BACKOFF_DELAY = DeliverySpec().backoff_delay
SERVICE_API = "serving.knative.dev/v1"
BROKER_API = "eventing.knative.dev/v1"
KAFKA_BOOTSTRAP = "bootstrap.servers"
KAFKA_PARTITIONS = "default.topic.partitions"
KAFKA_REPLICATION = "default.topic.replication.factor"


class Addresses(Protocol):
    """Where the platform's own objects answer: a Knative Service, and a Broker's ingress as seen from inside
    the platform (`K_SINK`, replies, dead letters)."""

    def service(self, namespace: str, name: str) -> str: ...

    def broker(self, namespace: str, name: str) -> str: ...


@dataclass(slots=True)
class Resolved:
    spec: EventingSpec
    not_ready: dict[tuple[str, str, str], str] = field(default_factory=dict)
    """(kind, namespace, name) -> why it is not ready (a missing Service, Broker, ConfigMap or Secret)."""
    bindings: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    """(namespace, Service) -> `K_SINK` and `K_CE_OVERRIDES` of the SinkBinding whose subject it is."""
    container_sources: list[tuple[ContainerSource, dict[str, str]]] = field(default_factory=list)
    """Each ContainerSource whose sink resolves, with the binding variables of that sink."""
    workload_bindings: dict[tuple[str, str, str], dict[str, str]] = field(default_factory=dict)
    """(kind, namespace, name) of a Deployment, StatefulSet, DaemonSet or CronJob -> the variables of the
    SinkBinding whose subject it is (Kubernetes)."""
    sinks: dict[tuple[str, str, str], str] = field(default_factory=dict)
    """(kind, namespace, name) of each SinkBinding and ContainerSource whose sink resolves -> that sink."""


class _Resolver:
    def __init__(
        self,
        events: Sequence[EventObject],
        services: Collection[tuple[str, str]],
        configs: Sequence[ConfigData],
        addresses: Addresses,
    ) -> None:
        self.addresses = addresses
        self.services = set(services)
        self.service_hosts: set[str] = set()
        self.broker_hosts: set[str] = set()
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
            base = self.addresses.service(ref.namespace, ref.name)
            self.service_hosts.add(urlsplit(base).netloc.lower())
        elif ref.kind == "Broker" and ref.api_version == BROKER_API and found in self.brokers:
            base = self.addresses.broker(ref.namespace, ref.name)
            self.broker_hosts.add(urlsplit(base).netloc.lower())
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
    services: Collection[tuple[str, str]],
    configs: Sequence[ConfigData],
    addresses: Addresses,
    workloads: Mapping[tuple[str, str, str], Mapping[str, str]] | None = None,
) -> Resolved:
    """The spec of `events` with every address resolved: `services` are the (namespace, name) of the Knative
    Services there are, `configs` the ConfigMaps and Secrets, `addresses` where Services and Brokers
    answer, `workloads` the labels of each workload a SinkBinding may bind, by (kind, namespace, name) (on
    Kubernetes)."""
    r = _Resolver(events, services, configs, addresses)
    brokers = [r.broker(b) for b in r.brokers.values()]
    known = {b.key for b in brokers if b.ready}
    triggers: list[TriggerSpec] = []
    pings: list[PingSpec] = []
    githubs: list[GitHubSpec] = []
    bindings: dict[tuple[str, str], dict[str, str]] = {}
    workload_bindings: dict[tuple[str, str, str], dict[str, str]] = {}
    sources: list[tuple[ContainerSource, dict[str, str]]] = []
    sinks: dict[tuple[str, str, str], str] = {}
    present = workloads or {}
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
            subject_key = (obj.namespace, obj.subject.name) if isinstance(obj, SinkBinding) else None
            if isinstance(obj, ContainerSource):
                sources.append((obj, binding))
                sinks[obj.key] = sink
            elif obj.subject.kind == "Service" and subject_key in r.services:
                bindings[(obj.subject.namespace, obj.subject.name)] = binding
                sinks[obj.key] = sink
            elif obj.selector is not None:
                selector = obj.selector
                for workload, labels in present.items():
                    kind, namespace, _ = workload
                    if (kind, namespace) == (obj.subject.kind, obj.namespace) and selector.matches(labels):
                        workload_bindings[workload] = binding
                sinks[obj.key] = sink  # a selector that matches nothing yet binds what comes
            elif (workload := (obj.subject.kind, obj.subject.namespace, obj.subject.name)) in present:
                workload_bindings[workload] = binding
                sinks[obj.key] = sink
            else:
                subject = obj.subject
                r.not_ready[obj.key] = (
                    f"spec.subject: {subject.kind} {subject.namespace}/{subject.name} not found"
                )
    spec = EventingSpec(
        tuple(brokers),
        tuple(triggers),
        tuple(pings),
        tuple(githubs),
        service_hosts=tuple(sorted(r.service_hosts - {""})),
        broker_hosts=tuple(sorted(r.broker_hosts - {""})),
    )
    return Resolved(spec, r.not_ready, bindings, sources, workload_bindings, sinks)


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


async def stream_feed(request: web.Request, feed: EventingFeed | None, token: str) -> web.StreamResponse:
    """Answer a watch of the Eventing objects: 404 without a feed, 403 without the right token (the spec
    holds webhook secrets), then the spec's lines until the watcher goes."""
    if feed is None:
        return web.Response(status=404, text="no eventing here\n")
    given = request.headers.get(TOKEN_HEADER, "")
    if not token or not hmac.compare_digest(given.encode(), token.encode()):
        return web.Response(status=403, text=f"the Eventing objects need the {TOKEN_HEADER} header\n")
    resp = web.StreamResponse()
    resp.content_type = "application/x-ndjson"
    await resp.prepare(request)
    try:
        async for line in feed.lines():
            await resp.write(line)
    except ConnectionResetError:
        log.debug("eventing watch from %s ended", request.remote)
    return resp
