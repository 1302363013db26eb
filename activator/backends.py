"""Which of a revision's pods may take traffic: platform-ready pods, and pods that passed our own probe.

Pods the platform lists but has not marked ready are probed directly every 200 ms (Knative's cadence) until
one probe passes, so a pod takes buffered requests the moment its queue-proxy answers, before the platform
notices. A pod the platform turns from ready to not ready (its app crashed or stopped answering) is dropped at
once and probed again; one it turns back to ready is used at once. A pod that refuses a connection (or whose
app did) is dropped at once and must pass a probe again, even if the platform still calls it ready; a pod the
platform stops listing is dropped and its probing stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from serving.clock import Clock, MonotonicClock
from serving.platform import Pod

log = logging.getLogger(__name__)

PROBE_PERIOD: Final = 0.2
"""Seconds between the starts of two probes of a pod that is not healthy yet (Knative's probe frequency)."""


Probe = Callable[[Pod], Awaitable[bool]]
"""Checks one pod; True when its queue-proxy says it is ready. Returns False for a failed probe."""


Sleep = Callable[[float], Awaitable[None]]


class Backends:
    """The health of one revision's pods, reported to `on_change` as a list of healthy addresses.

    States per listed pod: healthy (takes traffic) or probing (a task probes it until it passes). `suspect`
    marks pods whose connection failed: the platform's readiness is not trusted for them until a probe
    passes or the platform reports a fresh not-ready to ready transition. `on_change` is called synchronously
    whenever the healthy set changes.
    """

    def __init__(
        self,
        *,
        probe: Probe,
        on_change: Callable[[list[str]], None],
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        period: float = PROBE_PERIOD,
    ) -> None:
        self._probe = probe
        self._on_change = on_change
        self._clock = clock if clock is not None else MonotonicClock()
        self._sleep = sleep
        self._period = period
        self._pods: dict[str, Pod] = {}
        self._healthy: set[str] = set()
        self._suspect: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def healthy(self) -> list[str]:
        return sorted(self._healthy)

    @property
    def probing(self) -> list[str]:
        return sorted(self._tasks)

    def update(self, pods: Sequence[Pod]) -> None:
        """Apply the platform's current list of the revision's pods.

        Readiness is applied as transitions, both ways: ready -> not ready drops a healthy pod at once (a pod
        our own probe let in before the platform called it ready stays); not ready -> ready makes it healthy
        at once, whatever failed before, since the platform probed it after that.
        """
        listed = {p.address: p for p in pods}
        previous = self._pods
        changed = False
        for address in list(previous):
            if address not in listed:
                changed |= address in self._healthy
                self._healthy.discard(address)
                self._suspect.discard(address)
                self._stop_probe(address)
        self._pods = listed
        for address, pod in listed.items():
            before = previous.get(address)
            if before is not None and before.ready != pod.ready:
                if pod.ready:
                    self._suspect.discard(address)
                elif address in self._healthy:
                    log.info("pod %s turned not ready; probing it until it passes", address)
                    self._healthy.discard(address)
                    changed = True
            if address in self._healthy:
                continue
            if pod.ready and address not in self._suspect:
                self._healthy.add(address)
                self._stop_probe(address)
                changed = True
            elif address not in self._tasks:
                self._start_probe(address)
        if changed:
            self._notify()

    def request_failed(self, address: str) -> None:
        """A connection to the pod failed: stop using it now, and probe it again while it is listed."""
        if address not in self._healthy:
            return
        self._healthy.discard(address)
        self._suspect.add(address)
        self._notify()
        if address in self._pods and address not in self._tasks:
            self._start_probe(address)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _notify(self) -> None:
        self._on_change(sorted(self._healthy))

    def _start_probe(self, address: str) -> None:
        self._tasks[address] = asyncio.create_task(self._probe_until_healthy(address))

    def _stop_probe(self, address: str) -> None:
        task = self._tasks.pop(address, None)
        if task is not None:
            task.cancel()

    async def _probe_until_healthy(self, address: str) -> None:
        try:
            while (pod := self._pods.get(address)) is not None:
                started = self._clock.now()
                try:
                    passed = await self._probe(pod)
                except Exception:  # a probe bug must not stop probing; the pod just stays unhealthy
                    log.exception("probing %s failed unexpectedly", address)
                    passed = False
                if passed and address in self._pods:
                    self._suspect.discard(address)
                    self._healthy.add(address)
                    self._notify()
                    return
                await self._sleep(max(0.0, self._period - (self._clock.now() - started)))
        finally:
            if self._tasks.get(address) is asyncio.current_task():
                del self._tasks[address]
