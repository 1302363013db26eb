"""Runs the autoscaler for every revision the platform lists: scrapes each second, decides every two seconds
(and at once when the activator pokes a revision that is at zero), scales through the platform and publishes
each revision's status.

Decisions are synchronous and cheap; everything slow (scrapes, scale and status calls) runs in tasks of its
own, so one unreachable pod or a slow platform never delays another revision's tick.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from prometheus_client import CollectorRegistry

from autoscaler.decider import TICK_INTERVAL, Decision
from autoscaler.metrics import AutoscalerMetrics, RevisionView
from autoscaler.probe import ActivatorProbe
from autoscaler.revision import RevisionAutoscaler
from autoscaler.scaler import UNKNOWN, Outcome
from autoscaler.scraper import SCRAPE_INTERVAL, ScrapeError, ScrapeResult
from serving.autoscaling import AutoscalerConfig, AutoscalingError, RevisionScaling, revision_scaling
from serving.clock import Clock
from serving.platform import (
    Actuator,
    Mode,
    Pod,
    Revision,
    RevisionKey,
    RevisionSource,
    ScalerStatus,
    Snapshot,
)
from serving.stat import RevisionStat

log = logging.getLogger(__name__)

STATUS_REFRESH: Final = 10.0
"""Seconds between status publications when only the observed load moved (mode and scale go out at once)."""


class PodScraper(Protocol):
    async def scrape(self, pods: Sequence[Pod], window: float, wall_now: float) -> ScrapeResult | None: ...


def idlest_pods(pods: Sequence[Pod], count: int, concurrency: Mapping[str, float]) -> list[str]:
    """The `count` pods to remove first: not-ready ones, then the fewest in-flight requests by the last scrape
    (unsampled pods count as the sampled average), then the youngest."""
    if count <= 0:
        return []
    default = sum(concurrency.values()) / len(concurrency) if concurrency else 0.0
    ranked = sorted(pods, key=lambda p: (p.ready, concurrency.get(p.name, default), -p.started_at))
    return [p.name for p in ranked[:count]]


def _ready(revision: Revision) -> int:
    return sum(1 for p in revision.pods if p.ready)


_StatusFields = tuple[int | None, Mode, float, float, bool, float, int]
"""`ScalerStatus` as a tuple: desired, mode, stable, panic value, panic, excess burst capacity, activators."""


def _significant(a: _StatusFields, b: _StatusFields) -> bool:
    """Changes published at once: desired pods, mode, panic, activators, the sign of the burst capacity."""
    return a[0] != b[0] or a[1] != b[1] or a[4] != b[4] or a[6] != b[6] or (a[5] >= 0) != (b[5] >= 0)


@dataclass(slots=True)
class _Entry:
    """Everything kept for one revision."""

    revision: Revision
    ready: int
    """Ready pods of `revision`, counted once per snapshot."""
    scaler: RevisionAutoscaler | None
    """None while the revision's autoscaling annotations are invalid."""
    act_lock: asyncio.Lock
    scraping: asyncio.Task[None] | None = None
    pod_concurrency: Mapping[str, float] | None = None
    wanted: int | None = None
    """Replicas the latest reconcile asked for."""
    applied: int | None = None
    """Replicas last set on the platform."""
    status: _StatusFields | None = None
    published: _StatusFields | None = None
    published_at: float = -math.inf
    scrape_error: str | None = None
    poke_pending: bool = False
    decision: Decision | None = None
    """The latest tick's decision (None when that tick had no data)."""
    observed: tuple[float, float] | None = None
    """Stable and panic values of the latest decision that had data."""
    outcome: Outcome | None = None


class Multiscaler:
    """One `RevisionAutoscaler` per revision of the latest platform snapshot, and the loops that feed them.

    Single event loop; decisions (periodic and pokes) are serialised by one lock, platform calls by a lock per
    revision, and a platform call always sends the latest wanted scale.
    """

    def __init__(
        self,
        *,
        actuator: Actuator,
        scraper: PodScraper,
        config: AutoscalerConfig,
        clock: Clock,
        registry: CollectorRegistry,
        activator_probe: ActivatorProbe,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._actuator = actuator
        self._scraper = scraper
        self._config = config
        self._clock = clock
        self._probe = activator_probe
        self._wall = wall
        self._entries: dict[RevisionKey, _Entry] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._deciding = asyncio.Lock()
        AutoscalerMetrics(registry, self.views)

    # --- revisions ------------------------------------------------------------------------------------------

    @property
    def revisions(self) -> list[RevisionKey]:
        return sorted(self._entries)

    def scaler(self, key: RevisionKey) -> RevisionAutoscaler | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.scaler

    async def run_watch(self, source: RevisionSource) -> None:
        async for snapshot in source.watch():
            self.apply_snapshot(snapshot)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        now = self._clock.now()
        seen = set()
        for revision in snapshot.revisions:
            seen.add(revision.key)
            entry = self._entries.get(revision.key)
            if entry is None:
                self._entries[revision.key] = self._create(revision, now)
            else:
                self._update(entry, revision, now)
        for key in [k for k in self._entries if k not in seen]:
            self._delete(key)

    def _scaling(self, revision: Revision) -> RevisionScaling | None:
        try:
            return revision_scaling(revision.annotations, revision.container_concurrency, self._config)
        except AutoscalingError as exc:
            log.error("revision %s is not autoscaled: %s", revision.key, "; ".join(exc.problems))
            return None

    def _create(self, revision: Revision, now: float) -> _Entry:
        scaling = self._scaling(revision)
        scaler = None
        ready = _ready(revision)
        if scaling is not None:
            scaler = RevisionAutoscaler(scaling, now=now, ready_pods=ready, reachable=revision.reachable)
            log.info(
                "autoscaling %s (%s target %g, %d ready pods)",
                revision.key,
                scaling.metric,
                scaling.target,
                ready,
            )
        return _Entry(revision, ready, scaler, asyncio.Lock())

    def _update(self, entry: _Entry, revision: Revision, now: float) -> None:
        old = entry.revision
        entry.revision = revision
        entry.ready = _ready(revision)
        if (old.annotations, old.container_concurrency, old.reachable) == (
            revision.annotations,
            revision.container_concurrency,
            revision.reachable,
        ):
            return
        scaling = self._scaling(revision)
        if scaling is None:
            entry.scaler = None
        elif entry.scaler is None:
            entry.scaler = RevisionAutoscaler(
                scaling, now=now, ready_pods=entry.ready, reachable=revision.reachable
            )
        else:
            entry.scaler.update(scaling, now=now, reachable=revision.reachable)

    def _delete(self, key: RevisionKey) -> None:
        entry = self._entries.pop(key)
        if entry.scraping is not None:
            entry.scraping.cancel()
        log.info("revision %s is gone; stopped autoscaling it", key)

    # --- load -----------------------------------------------------------------------------------------------

    def record_activator(self, stats: list[RevisionStat]) -> None:
        """Record the activators' stats; a revision at zero with load is decided on at once (the poke)."""
        now = self._clock.now()
        for item in stats:
            entry = self._entries.get(RevisionKey(item.namespace, item.name))
            if entry is None or entry.scaler is None:
                continue
            entry.scaler.record(now, item.stat)
            if (
                entry.scaler.desired == 0
                and item.stat.average_concurrent_requests != 0
                and not entry.poke_pending
            ):
                entry.poke_pending = True
                self._spawn(self._poke(entry))

    def scrape_tick(self) -> list[asyncio.Task[None]]:
        """Start a scrape of every revision whose previous scrape has finished (a slow one skips a tick);
        returns the scrapes started."""
        started = []
        for entry in self._entries.values():
            scaler = entry.scaler
            if scaler is None or not scaler.collection.scraped:
                continue
            if entry.scraping is None or entry.scraping.done():
                entry.scraping = asyncio.create_task(self._scrape(entry))
                started.append(entry.scraping)
        return started

    async def scrape_once(self) -> None:
        """Start a scrape tick and wait for its scrapes (tests and benchmarks; the loop does not wait)."""
        self.scrape_tick()
        await asyncio.gather(*(e.scraping for e in self._entries.values() if e.scraping is not None))

    async def settle(self) -> None:
        """Wait for pending scale and status calls (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _scrape(self, entry: _Entry) -> None:
        scaler = entry.scaler
        if scaler is None:
            return
        key = entry.revision.key
        try:
            result = await self._scraper.scrape(
                entry.revision.pods, scaler.scaling.stable_window, self._wall()
            )
        except ScrapeError as exc:
            if entry.scrape_error is None:
                log.warning("scraping %s failed: %s", key, exc)
            entry.scrape_error = str(exc)
            return
        except Exception:  # a task boundary: log and keep scraping next tick
            log.exception("scraping %s failed", key)
            return
        if entry.scrape_error is not None:
            log.info("scraping %s works again", key)
            entry.scrape_error = None
        if result is None or self._entries.get(key) is not entry or entry.scaler is None:
            return
        entry.scaler.record(self._clock.now(), result.stat)
        entry.pod_concurrency = result.pod_concurrency

    # --- decisions ------------------------------------------------------------------------------------------

    async def decide_all(self) -> None:
        """One decider tick for every revision."""
        async with self._deciding:
            now = self._clock.now()
            entries = [e for e in self._entries.values() if e.scaler is not None]
            for entry in entries:
                self._decide(entry, now)
            in_path = True
            if any(e.scaler is not None and e.scaler.needs_activator_probe() for e in entries):
                in_path = await self._probe()
            for entry in entries:
                self._reconcile(entry, now, in_path)

    async def _poke(self, entry: _Entry) -> None:
        try:
            async with self._deciding:
                if entry.scaler is None or self._entries.get(entry.revision.key) is not entry:
                    return
                now = self._clock.now()
                self._decide(entry, now)
                in_path = True
                if entry.scaler.needs_activator_probe():
                    in_path = await self._probe()
                self._reconcile(entry, now, in_path)
        finally:
            entry.poke_pending = False

    def _decide(self, entry: _Entry, now: float) -> None:
        assert entry.scaler is not None
        decision = entry.decision = entry.scaler.decide(now, entry.ready)
        if decision is not None:
            entry.observed = (decision.stable, decision.panic_value)

    def _reconcile(self, entry: _Entry, now: float, activator_in_path: bool) -> None:
        scaler = entry.scaler
        if scaler is None:
            return
        outcome = entry.outcome = scaler.reconcile(now, entry.ready, activator_in_path=activator_in_path)
        if outcome.replicas is not None and outcome.replicas != entry.applied:
            entry.wanted = outcome.replicas
            self._spawn(self._actuate(entry))
        self._set_status(entry, outcome, now)

    def _set_status(self, entry: _Entry, outcome: Outcome, now: float) -> None:
        scaler = entry.scaler
        assert scaler is not None
        stable, panic_value = entry.observed or (0.0, 0.0)
        # The fields of ScalerStatus, in order; the object itself is built only when published.
        status = (
            None if outcome.want == UNKNOWN else outcome.want,
            outcome.mode,
            stable,
            panic_value,
            scaler.decider.panicking,
            float(scaler.excess_burst_capacity),
            outcome.activators,
        )
        entry.status = status
        published = entry.published
        if published == status:
            return
        if published is None or _significant(published, status) or now - entry.published_at >= STATUS_REFRESH:
            entry.published_at = now
            self._spawn(self._publish(entry))

    def views(self) -> list[RevisionView]:
        """The current view of every autoscaled revision (for the metrics endpoint)."""
        views = []
        for entry in self._entries.values():
            scaler = entry.scaler
            if scaler is None:
                continue
            stable, panic_value = entry.observed or (None, None)
            outcome = entry.outcome
            views.append(
                RevisionView(
                    key=entry.revision.key,
                    metric=scaler.scaling.metric,
                    target=scaler.scaling.target,
                    desired=UNKNOWN if outcome is None else outcome.want,
                    pods=len(entry.revision.pods),
                    ready=entry.ready,
                    panic=scaler.decider.panicking,
                    stable=stable,
                    panic_value=panic_value,
                    excess_burst_capacity=scaler.excess_burst_capacity,
                    activators=0 if outcome is None else outcome.activators,
                    mode=scaler.pa.mode,
                )
            )
        return views

    # --- platform calls -------------------------------------------------------------------------------------

    async def _actuate(self, entry: _Entry) -> None:
        async with entry.act_lock:
            replicas = entry.wanted
            if replicas is None or replicas == entry.applied:
                return
            pods = entry.revision.pods
            remove = idlest_pods(pods, len(pods) - replicas, entry.pod_concurrency or {})
            key = entry.revision.key
            try:
                await self._actuator.scale(key, replicas, remove)
            except Exception as exc:  # a task boundary: retried by the next tick
                log.warning("scaling %s to %d failed: %s", key, replicas, exc)
                return
            log.info(
                "scaled %s from %s to %d%s",
                key,
                entry.applied,
                replicas,
                f" (removing {remove})" if remove else "",
            )
            entry.applied = replicas

    async def _publish(self, entry: _Entry) -> None:
        async with entry.act_lock:
            status = entry.status
            if status is None or status == entry.published:
                return
            desired, mode, stable, panic_value, panic, ebc, activators = status
            try:
                await self._actuator.publish(
                    entry.revision.key,
                    ScalerStatus(
                        desired_pods=desired,
                        mode=mode,
                        stable_concurrency=stable,
                        panic_concurrency=panic_value,
                        panic=panic,
                        excess_burst_capacity=ebc,
                        activators=activators,
                    ),
                )
            except Exception as exc:  # a task boundary: the next tick publishes again
                log.warning("publishing the status of %s failed: %s", entry.revision.key, exc)
                entry.published_at = -math.inf
                return
            entry.published = status

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- loops ----------------------------------------------------------------------------------------------

    async def _every(self, interval: float, action: Callable[[], Awaitable[None]], name: str) -> None:
        next_at = self._clock.now()
        while True:
            try:
                await action()
            except Exception:  # a task boundary: one failed tick must not stop the loop
                log.exception("%s tick failed", name)
            next_at += interval
            delay = next_at - self._clock.now()
            if delay < 0:
                missed = math.ceil(-delay / interval)
                log.warning("%s is %d tick(s) behind; skipping them", name, missed)
                next_at += missed * interval
                delay = next_at - self._clock.now()
            await asyncio.sleep(max(delay, 0.0))

    async def run_scraper(self, interval: float = SCRAPE_INTERVAL) -> None:
        async def tick() -> None:
            self.scrape_tick()  # the scrapes run on their own; the next tick skips revisions still scraping

        await self._every(interval, tick, "scraper")

    async def run_decider(self, interval: float = TICK_INTERVAL) -> None:
        await self._every(interval, self.decide_all, "decider")

    async def aclose(self) -> None:
        """Cancel scrapes and pending platform calls (shutdown)."""
        tasks = [*self._tasks, *(e.scraping for e in self._entries.values() if e.scraping is not None)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
