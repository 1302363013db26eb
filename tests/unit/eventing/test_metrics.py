"""The eventing metrics a Prometheus scrape of the admin port shows."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

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
    seconds = "eventing_trigger_delivery_seconds"
    assert value(f"{seconds}_sum", namespace="default", trigger="t") == pytest.approx(1.01)
    bucket = f"{seconds}_bucket"
    assert value(bucket, namespace="default", trigger="t", le="0.005") == 0
    assert value(bucket, namespace="default", trigger="t", le="0.01") == 1  # `le` includes its bound
    assert value(bucket, namespace="default", trigger="t", le="0.5") == 3
    assert value(bucket, namespace="default", trigger="t", le="1.0") == 3  # as prometheus_client labels 1
    assert value(bucket, namespace="default", trigger="t", le="300.0") == 3
    assert value(bucket, namespace="default", trigger="t", le="+Inf") == 3
    text = generate_latest(registry).decode()
    assert "# TYPE eventing_trigger_delivery_seconds histogram" in text
    assert 'eventing_broker_events_total{broker="default",namespace="default",result="accepted"} 3.0' in text


def test_a_second_collector_of_the_same_names_is_refused() -> None:
    registry = CollectorRegistry()
    EventingMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        EventingMetrics(registry)
