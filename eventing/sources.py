"""The sources the eventing component runs itself: PingSources (a cron schedule sending a fixed event) and
webhook sources (GitHubSource: signed posts turned into CloudEvents), each delivering to its resolved sink
with retries, as Knative's source adapters do."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from eventing.delivery import Deliverer
from eventing.event import Event
from eventing.github import MAX_BODY_BYTES, receive
from eventing.ingress import Answer, Incoming
from eventing.ping import PingScheduler
from serving.contract.eventing import DeliverySpec, EventingSpec, GitHubSpec, PingSpec
from serving.events import Destination, GitHubSource, PingSource, SecretKeyRef

log = logging.getLogger(__name__)

SINK_DELIVERY = DeliverySpec(retry=5, backoff_delay=0.05)
"""How a source offers an event to its sink: Knative's source adapters retry 5 times from 50 ms (a sink that
is a Broker answers at once; a Service at zero is woken through the activator, and its overload answers are
retried beyond these)."""


WEBHOOK_DEADLINE = 8.0
"""Seconds a webhook delivery may take to reach its sink before the receiver answers 504: GitHub gives up on
a hook after 10 s (and shows it as failed, so it can be redelivered)."""
WEBHOOK_DELIVERY = DeliverySpec(retry=2, backoff_delay=0.1, timeout=3.0)


@dataclass(slots=True)
class SourceCounts:
    sent: int = 0
    failed: int = 0


def _ping_source(spec: PingSpec) -> PingSource:
    """The scheduler's view of a PingSource: the resolved sink becomes its `uri`."""
    return PingSource(
        kind="PingSource",
        name=spec.name,
        namespace=spec.namespace,
        source=Path(f"PingSource {spec.namespace}/{spec.name}"),
        schedule=spec.schedule,
        timezone=spec.timezone,
        content_type=spec.content_type,
        data=spec.data,
        sink=Destination(uri=spec.sink),
        ce_overrides=spec.ce_overrides,
    )


def _github_source(spec: GitHubSpec) -> GitHubSource:
    """The receiver's view of a GitHubSource (its secret travels beside it, never in it)."""
    return GitHubSource(
        kind="GitHubSource",
        name=spec.name,
        namespace=spec.namespace,
        source=Path(f"GitHubSource {spec.namespace}/{spec.name}"),
        owner_and_repository=spec.owner_and_repository,
        event_types=spec.event_types,
        secret_token=SecretKeyRef("", ""),
        sink=Destination(uri=spec.sink),
        ce_overrides=spec.ce_overrides,
    )


class Sources:
    def __init__(self, deliverer: Deliverer) -> None:
        self._deliverer = deliverer
        self._pings = PingScheduler(self._send_ping)
        self.githubs: dict[tuple[str, str], GitHubSpec] = {}
        self.counts: dict[tuple[str, str, str], SourceCounts] = {}
        self.problems: dict[tuple[str, str, str], str] = {}

    def apply(self, spec: EventingSpec) -> None:
        ready = [p for p in spec.pings if p.sink is not None]  # an unresolved sink: not ready, not fired
        problems = self._pings.update(_ping_source(p) for p in ready)
        self.problems = dict(problems)
        self.githubs = {(g.namespace, g.name): g for g in spec.githubs}

    async def run(self) -> None:
        await self._pings.run()

    async def _send_ping(self, source: PingSource, event: Event) -> None:
        await self._deliver("PingSource", source.namespace, source.name, source.sink.uri, event)

    async def _deliver(
        self,
        kind: str,
        namespace: str,
        name: str,
        sink: str | None,
        event: Event,
        policy: DeliverySpec = SINK_DELIVERY,
    ) -> bool:
        counts = self.counts.setdefault((kind, namespace, name), SourceCounts())
        if sink is None:
            counts.failed += 1
            return False
        outcome = await self._deliverer.deliver(sink, event, policy)
        if outcome.delivered:
            counts.sent += 1
        else:
            counts.failed += 1
            last = outcome.last
            log.warning(
                "%s %s/%s: event %s not taken by %s (%s)",
                kind,
                namespace,
                name,
                event.id,
                sink,
                last.error or f"status {last.status}" if last is not None else "?",
            )
        return outcome.delivered

    async def webhook(self, request: Incoming) -> Answer:
        """A GitHubSource's receiver (`/{namespace}/{name}` on the webhook Host): verify, convert, deliver to
        the sink, and answer 202 once the sink took the event; a sink that did not answers 502, so that
        GitHub's delivery log shows the failure and the delivery can be redelivered from there."""
        namespace, name = request.namespace, request.name
        spec = self.githubs.get((namespace, name))
        if spec is None:
            return Answer(404, f"no GitHubSource {namespace}/{name}")
        if request.method != "POST":
            return Answer(405, "POST a webhook delivery", (("Allow", "POST"),))
        if spec.secret is None or spec.sink is None:
            return Answer(503, f"GitHubSource {namespace}/{name} is not ready")
        body = await request.read(MAX_BODY_BYTES)
        if body is None:
            return Answer(413, f"more than the {MAX_BODY_BYTES} bytes GitHub sends")
        result = receive(_github_source(spec), spec.secret, request.header_map(), body)
        if result.event is None:
            return Answer(result.status, result.reason)
        try:
            async with asyncio.timeout(WEBHOOK_DEADLINE):
                taken = await self._deliver(
                    "GitHubSource", namespace, name, spec.sink, result.event, WEBHOOK_DELIVERY
                )
        except TimeoutError:
            self.counts.setdefault(("GitHubSource", namespace, name), SourceCounts()).failed += 1
            return Answer(504, f"the sink {spec.sink} did not take the event within {WEBHOOK_DEADLINE:g}s")
        if taken:
            return Answer(202)
        return Answer(502, f"the sink {spec.sink} did not take the event")

    def status(self) -> dict[str, object]:
        keys = self.counts.keys() | self.problems.keys()
        return {
            "sources": [
                {
                    "namespace": ns,
                    "name": name,
                    "kind": kind,
                    "sent": self.counts.get((kind, ns, name), SourceCounts()).sent,
                    "failed": self.counts.get((kind, ns, name), SourceCounts()).failed,
                    "problem": self.problems.get((kind, ns, name), ""),
                }
                for kind, ns, name in sorted(keys)
            ]
        }
