"""The benchmark scenarios by name: Knative's performance benchmarks (knative/serving
`test/performance/benchmarks`), scaled to a small machine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from bench.context import Context
from bench.results.result import RunResult
from bench.scenarios import coldstart, dataplane, loadtest, realtraffic, rollout

Runner = Callable[[Context], Awaitable[RunResult]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """`run` starts the system under test as real processes, drives load and returns a `RunResult`; its
    parameters come from the scenario's preset (`bench.preset`)."""

    name: str
    summary: str
    run: Runner


SCENARIOS: Final = {
    s.name: s
    for s in (
        Scenario(
            name="dataplane-probe",
            summary="latency direct, through the queue-proxy, and through activator + queue-proxy",
            run=dataplane.run,
        ),
        Scenario(
            name="scale-from-zero",
            summary="1, 5 and 25 services woken at once: time to first 200, split into its parts",
            run=coldstart.run,
        ),
        Scenario(
            name="load-test",
            summary="stepped rates from zero with the autoscaler live: latency per step, pods over time",
            run=loadtest.run,
        ),
        Scenario(
            name="rollout-probe",
            summary="constant rate while the Service's template changes: errors and latency",
            run=rollout.run,
        ),
        Scenario(
            name="real-traffic",
            summary="random latency, startup time and payload size across several services: errors",
            run=realtraffic.run,
        ),
    )
}


def scenarios() -> dict[str, Scenario]:
    return dict(SCENARIOS)
