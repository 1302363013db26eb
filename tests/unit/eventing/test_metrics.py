"""The eventing metrics a Prometheus scrape of the admin port shows."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from eventing.delivery import Outcome
from eventing.metrics import EventingMetrics
from serving.contract.eventing import TriggerSpec


def test_broker_and_trigger_outcomes_are_counted() -> None:
    registry = CollectorRegistry()
    metrics = EventingMetrics(registry)
    trigger = TriggerSpec("default", "t", "default", "http://sink")
    for _ in range(3):
        metrics.broker("default", "default", "accepted")
    metrics.broker("default", "default", "rejected")
    metrics.observe(trigger, Outcome(True, retries=2), 0.01)
    metrics.observe(trigger, Outcome(False, dead_lettered=True), 0.5)
    metrics.observe(trigger, Outcome(False), 0.5)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert (
        value("eventing_broker_events_total", namespace="default", broker="default", result="accepted") == 3
    )
    assert (
        value("eventing_broker_events_total", namespace="default", broker="default", result="rejected") == 1
    )
    for outcome in ("delivered", "dead_lettered", "dropped"):
        assert value("eventing_trigger_events_total", namespace="default", trigger="t", outcome=outcome) == 1
    assert value("eventing_trigger_retries_total", namespace="default", trigger="t") == 2
    assert value("eventing_trigger_delivery_seconds_count", namespace="default", trigger="t") == 3
