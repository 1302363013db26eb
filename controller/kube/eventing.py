"""Eventing on Kubernetes: the controller watches Knative Eventing's objects (Broker, Trigger, PingSource,
GitHubSource, ContainerSource, SinkBinding), the Knative Services they name, the ConfigMaps and Secrets they
read and the workloads they bind (Deployments, StatefulSets, DaemonSets, CronJobs), resolves them with the
same rules as the local platform (`controller.reconcile.eventing`) and

- serves the resolved `EventingSpec` to the eventing component (`GET /v1/eventing?watch=true` on
  `EVENTING_FEED_PORT`, with `EVENTING_TOKEN`): every replica serves it, so the component's watch reaches
  whichever the `controller` Service picks;
- writes each object's status as Knative does (the leader only): a Broker's `status.address.url`, a Trigger's
  `status.subscriberUri`, a source's `status.sinkUri`, and a `Ready` condition saying what is missing;
- runs ContainerSources as Deployments and puts SinkBindings' variables into their subjects (the leader
  only, `controller.kube.sources`).

Addresses are in-cluster names: a Service is `http://{name}.{namespace}.svc.{cluster domain}` (the router
answers it), a Broker `http://broker-ingress.{system namespace}.svc.{cluster domain}/{namespace}/{name}` (the
eventing component's Service), a GitHubSource's webhook `http://webhook.{system namespace}.svc.{cluster
domain}/{namespace}/{name}`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from controller.kube.controller import StatusWriter, condition
from controller.kube.sources import WORKLOADS, Workloads
from controller.reconcile.eventing import EventingFeed, Resolved, resolve, stream_feed
from serving.configdata import ConfigData, parse_config_data
from serving.contract.controller import ControllerConfig
from serving.contract.eventing import EventingSpec
from serving.events import (
    KAFKA_CLASS,
    Broker,
    EventObject,
    GitHubSource,
    cluster_event_problems,
    event_object,
)
from serving.kube.api import (
    BROKERS,
    CONFIG_MAPS,
    CONTAINER_SOURCES,
    GITHUB_SOURCES,
    JSON,
    PING_SOURCES,
    SECRETS,
    SERVICES,
    SINK_BINDINGS,
    TRIGGERS,
    ApiError,
    Kube,
    Resource,
)
from serving.kube.informer import Informer

log = logging.getLogger(__name__)

EVENT_RESOURCES: Final = (BROKERS, TRIGGERS, PING_SOURCES, GITHUB_SOURCES, CONTAINER_SOURCES, SINK_BINDINGS)
"""The Eventing kinds the controller reconciles on a cluster."""
RETRY_FIRST: Final = 0.5
RETRY_MAX: Final = 30.0


@dataclass(frozen=True, slots=True)
class KubeAddresses:
    """In-cluster addresses (`Addresses` of `controller.reconcile.eventing`)."""

    system_namespace: str
    cluster_domain: str

    def service(self, namespace: str, name: str) -> str:
        return f"http://{name}.{namespace}.svc.{self.cluster_domain}"

    def broker(self, namespace: str, name: str) -> str:
        return f"http://broker-ingress.{self.system_namespace}.svc.{self.cluster_domain}/{namespace}/{name}"

    def webhook(self, namespace: str, name: str) -> str:
        return f"http://webhook.{self.system_namespace}.svc.{self.cluster_domain}/{namespace}/{name}"


def read_object(obj: Mapping[str, Any]) -> tuple[EventObject | None, list[str]]:
    """An Eventing object from the API, or None and its problems (`field: rule`, as `serving up` words
    them); what this platform cannot run (another broker class, a ref to a kind it does not resolve) is a
    problem too."""
    meta = obj.get("metadata") or {}
    source = Path(f"{obj.get('kind')}/{meta.get('namespace')}/{meta.get('name')}")
    problems: list[str] = []
    found = event_object(obj, source, 1, problems)
    if found is not None:
        problems += cluster_event_problems(found)
    return (None if problems else found), [_bare(p) for p in problems]


def _bare(problem: str) -> str:
    """`<file>: document 1 (<kind>/<name>): field: rule` as `field: rule`."""
    head, sep, rest = problem.partition("): ")
    return rest if sep and ": document " in head else problem


def read_config(obj: Mapping[str, Any]) -> ConfigData | None:
    meta = obj.get("metadata") or {}
    problems: list[str] = []
    found = parse_config_data(obj, Path(f"{obj.get('kind')}/{meta.get('name')}"), 1, problems)
    if problems:
        log.warning("%s/%s cannot be read: %s", meta.get("namespace"), meta.get("name"), "; ".join(problems))
    return found


class KubeEventing:
    def __init__(self, kube: Kube, config: ControllerConfig) -> None:
        self._kube = kube
        self.addresses = KubeAddresses(config.system_namespace, config.cluster_domain)
        self._token = config.eventing_token
        self._port = config.eventing_feed_port
        self.objects = {resource.plural: Informer(kube, resource) for resource in EVENT_RESOURCES}
        self.services = Informer(kube, SERVICES)
        self.config_maps = Informer(kube, CONFIG_MAPS)
        self.secrets = Informer(kube, SECRETS)
        self.workload_objects = {kind: Informer(kube, resource) for kind, resource in WORKLOADS.items()}
        """By kind: SinkBindings' subjects (and the workloads they bound before); the Deployments also hold
        ContainerSources' and Knative Services' revisions'."""
        self.workloads = Workloads(kube)
        self.feed = EventingFeed()
        self.resolved = Resolved(EventingSpec())
        self.invalid: dict[tuple[str, str, str], list[str]] = {}
        """(kind, namespace, name) -> the problems of an object that cannot be read."""
        self.snapshot: list[tuple[Resource, Mapping[str, Any]]] = []
        """The objects the last pass resolved: statuses are written for these, never for an object that
        reached an informer after the pass (it would read as Ready with no address until the next one)."""
        self._dirty = asyncio.Event()
        self._resolved_version = 0
        self._changed = asyncio.Condition()
        self._statuses = StatusWriter(kube)

    # -- the loop ----------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Watch, resolve and publish the spec on every change; runs until cancelled (every replica)."""
        informers = [
            *self.objects.values(),
            self.services,
            self.config_maps,
            self.secrets,
            *self.workload_objects.values(),
        ]
        async with asyncio.TaskGroup() as group:
            for informer in informers:
                group.create_task(informer.run())
                group.create_task(self._follow(informer))
            for informer in informers:
                await informer.synced.wait()
            log.info("eventing: watching %s", ", ".join(r.plural for r in EVENT_RESOURCES))
            while True:
                await self._dirty.wait()
                self._dirty.clear()
                await self.sync()

    async def _follow(self, informer: Informer) -> None:
        async for _ in informer.changes():
            self._dirty.set()

    async def sync(self) -> None:
        """One pass: read the objects, resolve them, publish the spec and wake the status writer."""
        events: list[EventObject] = []
        invalid: dict[tuple[str, str, str], list[str]] = {}
        snapshot: list[tuple[Resource, Mapping[str, Any]]] = []
        for informer in self.objects.values():
            for obj in informer.items():
                snapshot.append((informer.resource, obj))
                found, problems = read_object(obj)
                if found is not None:
                    events.append(found)
                else:
                    meta = obj.get("metadata") or {}
                    invalid[(informer.resource.kind, meta.get("namespace", ""), meta.get("name", ""))] = (
                        problems
                    )
        services = [key for key in self.services.cache if key[0] and key[1]]
        workloads = {
            (kind, *key): (obj.get("metadata") or {}).get("labels") or {}
            for kind, informer in self.workload_objects.items()
            for key, obj in informer.cache.items()
            if key[0] and key[1]
        }
        resolved = resolve(events, services, self._configs(events), self.addresses, workloads)
        await self.feed.set(resolved.spec)
        async with self._changed:
            self.resolved, self.invalid, self.snapshot = resolved, invalid, snapshot
            self._resolved_version += 1
            self._changed.notify_all()

    def _configs(self, events: Sequence[EventObject]) -> list[ConfigData]:
        """The ConfigMaps (Kafka Brokers' `spec.config`) and Secrets (webhook secrets) the objects name."""
        found: list[ConfigData] = []
        for obj in events:
            raw = None
            if isinstance(obj, Broker) and obj.broker_class == KAFKA_CLASS and obj.config is not None:
                raw = self.config_maps.get(obj.config.namespace, obj.config.name)
            elif isinstance(obj, GitHubSource):
                raw = self.secrets.get(obj.namespace, obj.secret_token.name)
            config = read_config(raw) if raw is not None else None
            if config is not None:
                found.append(config)
        return found

    # -- the feed (every replica) ------------------------------------------------------------------------
    async def serve(self) -> None:
        """`GET /v1/eventing?watch=true` on `EVENTING_FEED_PORT` until cancelled."""
        app = web.Application()
        app.router.add_get("/v1/eventing", self._watch)
        app.router.add_get("/healthz", self._healthz)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, None, self._port).start()
            log.info("eventing feed on :%d", self._port)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        if not all(informer.synced.is_set() for informer in self.objects.values()):
            return web.Response(status=503, text="the Eventing objects are not read yet\n")
        return await stream_feed(request, self.feed, self._token)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    # -- status (the leader) -----------------------------------------------------------------------------
    async def write_statuses(self) -> None:
        """Write every object's status after each pass; runs until cancelled (the leader only)."""
        seen = 0
        delay = RETRY_FIRST
        while True:
            async with self._changed:
                await self._changed.wait_for(partial(self._newer_than, seen))
                seen = self._resolved_version
            try:
                await self._write_all()
                delay = RETRY_FIRST
            except ApiError as exc:
                log.warning("eventing status pass failed: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                seen = -1  # write again even if nothing changed meanwhile

    def _newer_than(self, version: int) -> bool:
        return self._resolved_version != version

    async def _write_all(self) -> None:
        # One resolution, the objects it read and their problems, taken together before anything awaits.
        resolved, snapshot, invalid = self.resolved, self.snapshot, self.invalid
        sources = self.objects[CONTAINER_SOURCES.plural].cache
        await self.workloads.apply(
            resolved, sources, {kind: informer.cache for kind, informer in self.workload_objects.items()}
        )
        unavailable = self.workloads.not_ready
        addresses = _StatusAddresses(resolved, self.addresses)
        for resource, obj in snapshot:
            meta = obj.get("metadata") or {}
            ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
            key = (resource.kind, ns, name)
            previous = (obj.get("status") or {}).get("conditions")
            status: JSON = {"observedGeneration": meta.get("generation", 0)}
            problems = invalid.get(key)
            if problems is not None:
                ready = condition("Ready", "False", "InvalidSpec", "; ".join(problems), previous)
            elif key in resolved.not_ready:
                ready = condition("Ready", "False", "NotResolved", resolved.not_ready[key], previous)
            elif key in unavailable:
                ready = condition("Ready", "False", "DeploymentUnavailable", unavailable[key], previous)
            else:
                ready = condition("Ready", "True", "", "", previous)
            if problems is None:
                status.update(addresses.of(resource, ns, name))
            status["conditions"] = [ready]
            await self._statuses.patch(resource, ns, name, status)


class _StatusAddresses:
    """The addresses Knative's status shows, from one resolution: a Broker's own, where a Trigger or a
    source sends."""

    def __init__(self, resolved: Resolved, addresses: KubeAddresses) -> None:
        spec = resolved.spec
        self._addresses = addresses
        self._triggers = {t.key: t for t in spec.triggers}
        self._pings = {(p.namespace, p.name): p.sink for p in spec.pings}
        self._githubs = {(g.namespace, g.name): g.sink for g in spec.githubs}
        self._sinks = resolved.sinks

    def of(self, resource: Resource, ns: str, name: str) -> JSON:
        key = (ns, name)
        if resource is BROKERS:
            url = self._addresses.broker(ns, name)
            return {"address": {"name": "http", "url": url}, "addresses": [{"name": "http", "url": url}]}
        if resource is TRIGGERS and key in self._triggers:
            trigger = self._triggers[key]
            found: JSON = {"subscriberUri": trigger.subscriber}
            if trigger.delivery.dead_letter_sink:
                found["deadLetterSinkUri"] = trigger.delivery.dead_letter_sink
            return found
        if resource is PING_SOURCES and key in self._pings:
            return {"sinkUri": self._pings[key]}
        if resource is GITHUB_SOURCES and key in self._githubs:
            return {"sinkUri": self._githubs[key], "webhookUrl": self._addresses.webhook(ns, name)}
        sink = self._sinks.get((resource.kind, ns, name))
        return {"sinkUri": sink} if sink is not None else {}
