"""Prometheus metrics of Brokers and Triggers, on an injected registry (the admin port's `/metrics`).

`EventingMetrics` is a collector: events are counted in plain numbers per Broker and per Trigger (no lock and
no label lookup per event, as one event loop records them) and turned into metric families when scraped, as
the queue-proxy's request metrics are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from eventing.delivery import Outcome
from serving.contract.eventing import TriggerSpec
from serving.tally import LatencyTally

_LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
)  # fmt: skip
OUTCOMES: Final = ("delivered", "dead_lettered", "dropped")


class _TriggerTally:
    __slots__ = ("latency", "outcomes", "retries")

    def __init__(self) -> None:
        self.outcomes = [0, 0, 0]
        """By `OUTCOMES`."""
        self.retries = 0
        self.latency = LatencyTally(_LATENCY_BUCKETS)


class EventingMetrics(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._brokers: dict[tuple[str, str, str], int] = {}
        """Answers of the ingress by (namespace, broker, result)."""
        self._triggers: dict[tuple[str, str], _TriggerTally] = {}
        registry.register(self)

    def broker(self, namespace: str, broker: str, result: str) -> None:
        """An answer of a Broker's ingress: `result` is accepted, rejected or unavailable."""
        key = (namespace, broker, result)
        self._brokers[key] = self._brokers.get(key, 0) + 1

    def observe(self, trigger: TriggerSpec, outcome: Outcome, seconds: float) -> None:
        key = (trigger.namespace, trigger.name)
        tally = self._triggers.get(key)
        if tally is None:
            tally = self._triggers[key] = _TriggerTally()
        tally.outcomes[0 if outcome.delivered else 1 if outcome.dead_lettered else 2] += 1
        tally.retries += outcome.retries
        tally.latency.time(seconds)

    def describe(self) -> Iterator[Metric]:
        return self._families(empty=True)

    def collect(self) -> Iterator[Metric]:
        return self._families(empty=False)

    def _families(self, *, empty: bool) -> Iterator[Metric]:
        brokers = CounterMetricFamily(
            "eventing_broker_events",
            "Events a Broker's ingress answered, by result (accepted, rejected, unavailable).",
            labels=["namespace", "broker", "result"],
        )
        events = CounterMetricFamily(
            "eventing_trigger_events",
            "Events of a Trigger by outcome (delivered, dead_lettered, dropped).",
            labels=["namespace", "trigger", "outcome"],
        )
        retries = CounterMetricFamily(
            "eventing_trigger_retries",
            "Attempts after the first, per Trigger (overload waits included).",
            labels=["namespace", "trigger"],
        )
        latency = HistogramMetricFamily(
            "eventing_trigger_delivery_seconds",
            "From a Trigger taking an event to its delivery or dead-lettering, retries included.",
            labels=["namespace", "trigger"],
        )
        if not empty:
            for key, count in list(self._brokers.items()):
                brokers.add_metric(list(key), count)
            for (namespace, name), tally in list(self._triggers.items()):
                for outcome, count in zip(OUTCOMES, tally.outcomes, strict=True):
                    events.add_metric([namespace, name, outcome], count)
                retries.add_metric([namespace, name], tally.retries)
                latency.add_metric([namespace, name], tally.latency.samples(), tally.latency.sum)
        yield from (brokers, events, retries, latency)
