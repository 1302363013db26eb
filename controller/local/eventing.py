"""Eventing on the local platform: where its Services and Brokers answer (`LocalAddresses`), the desired
state's Eventing objects resolved with them (`resolve_local`, with each ContainerSource and the binding it
runs with), and what `serving status` shows of them (`EventingView`).

Addresses are the ingress's: a Trigger's events reach a Service through the router and, at zero, the
activator, exactly as any request does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from controller.local.sources import SourceRun
from controller.reconcile.eventing import Resolved, resolve
from serving.configdata import ConfigData
from serving.contract.eventing import BROKER_HOST, WEBHOOK_HOST, EventingSpec
from serving.events import (
    Broker,
    ContainerSource,
    EventObject,
    GitHubSource,
    PingSource,
    SinkBinding,
    Trigger,
)
from serving.service import Service


def broker_url(namespace: str, name: str, port: int) -> str:
    """A Broker's ingress address on the local platform (`status.address.url` in Knative)."""
    return f"http://{BROKER_HOST}:{port}/{namespace}/{name}"


def internal_broker_url(namespace: str, name: str, port: int) -> str:
    """A Broker's address inside the platform (`K_SINK`, replies, dead letters): the eventing component's
    own port, which any HTTP client reaches (a `*.localhost` name does not resolve everywhere)."""
    return f"http://127.0.0.1:{port}/{namespace}/{name}"


def webhook_url(namespace: str, name: str, port: int) -> str:
    return f"http://{WEBHOOK_HOST}:{port}/{namespace}/{name}"


@dataclass(frozen=True, slots=True)
class LocalAddresses:
    """Services through the ingress `port` (`http://{name}.{namespace}.localhost:{port}`), Brokers at the
    eventing component's `broker_port`."""

    port: int
    broker_port: int

    def service(self, namespace: str, name: str) -> str:
        return f"http://{name}.{namespace}.localhost:{self.port}"

    def broker(self, namespace: str, name: str) -> str:
        return internal_broker_url(namespace, name, self.broker_port)


def resolve_local(
    events: Sequence[EventObject],
    services: Sequence[Service],
    configs: Sequence[ConfigData],
    port: int,
    broker_port: int,
) -> tuple[Resolved, list[SourceRun]]:
    """The spec of `events` on this machine, and the ContainerSources to run (a change of anything in a
    source's `spec.template` restarts it)."""
    resolved = resolve(events, [s.key for s in services], configs, LocalAddresses(port, broker_port))
    runs = [
        SourceRun(source, binding, json.dumps(source.template, sort_keys=True, default=str))
        for source, binding in resolved.container_sources
    ]
    return resolved, runs


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
                (source.namespace, source.name): binding["K_SINK"]
                for source, binding in self.resolved.container_sources
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
