"""Prometheus metrics of Brokers and Triggers, on an injected registry (the admin port's `/metrics`)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from eventing.delivery import Outcome
from serving.contract.eventing import TriggerSpec

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class EventingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.broker_events = Counter(
            "eventing_broker_events",
            "Events a Broker's ingress answered, by result (accepted, rejected, unavailable).",
            ["namespace", "broker", "result"],
            registry=registry,
        )
        self.trigger_events = Counter(
            "eventing_trigger_events",
            "Events of a Trigger by outcome (delivered, dead_lettered, dropped).",
            ["namespace", "trigger", "outcome"],
            registry=registry,
        )
        self.trigger_retries = Counter(
            "eventing_trigger_retries",
            "Attempts after the first, per Trigger (overload waits included).",
            ["namespace", "trigger"],
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            "eventing_trigger_delivery_seconds",
            "From a Trigger taking an event to its delivery or dead-lettering, retries included.",
            ["namespace", "trigger"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )

        # Label children are bound once per label set, not looked up per event.
        self._brokers: dict[tuple[str, str, str], Any] = {}
        self._triggers: dict[tuple[str, str], tuple[dict[str, Any], Any, Any]] = {}

    def broker(self, namespace: str, broker: str, result: str) -> None:
        key = (namespace, broker, result)
        child = self._brokers.get(key)
        if child is None:
            child = self._brokers[key] = self.broker_events.labels(namespace, broker, result)
        child.inc()

    def observe(self, trigger: TriggerSpec, outcome: Outcome, seconds: float) -> None:
        key = (trigger.namespace, trigger.name)
        bound = self._triggers.get(key)
        if bound is None:
            outcomes = {
                o: self.trigger_events.labels(*key, o) for o in ("delivered", "dead_lettered", "dropped")
            }
            bound = self._triggers[key] = (
                outcomes,
                self.trigger_retries.labels(*key),
                self.delivery_seconds.labels(*key),
            )
        outcomes, retries, latency = bound
        name = "delivered" if outcome.delivered else "dead_lettered" if outcome.dead_lettered else "dropped"
        outcomes[name].inc()
        if outcome.retries:
            retries.inc(outcome.retries)
        latency.observe(seconds)
