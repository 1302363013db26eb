"""Every revision the activator knows, each with its throttler, pod health and upstream pools.

Fed by the platform's revision watch (`RevisionSource`, the seam any platform implements):
each snapshot updates settings, pods and probing; a revision missing from a snapshot is forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from activator.backends import Backends, Probe
from activator.metrics import ActivatorMetrics, RevisionMetrics
from activator.throttler import RevisionThrottler
from serving.autoscaling import DEFAULT, AutoscalerConfig, AutoscalingError, revision_scaling
from serving.http import ForwardTimeouts, H2UpstreamPool, UpstreamPool
from serving.platform import Revision, RevisionKey, RevisionSource, Snapshot

log = logging.getLogger(__name__)


def forward_timeouts(revision: Revision) -> ForwardTimeouts:
    """The engine's per-forward limits from the revision's settings (0 = not set)."""
    return ForwardTimeouts(
        response_start=revision.response_start_timeout_seconds or None,
        idle=revision.idle_timeout_seconds or None,
    )


def max_scale(revision: Revision, config: AutoscalerConfig) -> int:
    """The most pods the autoscaler gives the revision (0: unbounded), from the same annotations and
    cluster settings it reads; annotations it refuses leave the revision unbounded here."""
    try:
        return revision_scaling(revision.annotations, revision.container_concurrency, config).max_scale
    except AutoscalingError:
        return 0


class RevisionEntry:
    """One revision's state in this activator. Requests hold a reference while they run, so an entry that
    leaves the registry stays usable until they finish."""

    __slots__ = (
        "backends",
        "forward_timeouts",
        "key",
        "metrics",
        "pools",
        "revision",
        "throttler",
        "timeout",
    )

    def __init__(
        self, revision: Revision, throttler: RevisionThrottler, probe: Probe, metrics: RevisionMetrics
    ) -> None:
        self.key = revision.key
        self.revision = revision
        self.throttler = throttler
        self.metrics = metrics
        self.backends = Backends(probe=probe, on_change=throttler.update_backends)
        self.pools: dict[str, UpstreamPool | H2UpstreamPool] = {}
        self.timeout = revision.timeout_seconds
        self.forward_timeouts = forward_timeouts(revision)

    def pool(self, address: str) -> UpstreamPool | H2UpstreamPool:
        """The pool for a pod: HTTP/2 to the queue-proxies of an h2c revision, HTTP/1.1 otherwise."""
        pool = self.pools.get(address)
        if pool is None:
            host, _, port = address.rpartition(":")
            if self.revision.protocol == "h2c":
                pool = self.pools[address] = H2UpstreamPool(host, int(port))
            else:
                pool = self.pools[address] = UpstreamPool(host, int(port))
        return pool

    def pod_failed(self, address: str) -> None:
        """A connection to the pod was refused: stop sending to it until it passes a probe."""
        self.backends.request_failed(address)

    def update(self, revision: Revision) -> list[UpstreamPool | H2UpstreamPool]:
        """Apply new settings and pods; returns pools of pods that are gone, for the caller to close."""
        self.revision = revision
        self.timeout = revision.timeout_seconds
        self.forward_timeouts = forward_timeouts(revision)
        self.throttler.update_concurrency(revision.container_concurrency)
        self.backends.update(revision.pods)
        listed = {p.address for p in revision.pods}
        return [self.pools.pop(a) for a in list(self.pools) if a not in listed]

    async def close(self) -> list[UpstreamPool | H2UpstreamPool]:
        await self.backends.close()
        pools = list(self.pools.values())
        self.pools.clear()
        return pools


class Registry:
    def __init__(
        self,
        *,
        probe: Callable[[RevisionKey], Probe],
        metrics: ActivatorMetrics,
        queue_depth: int,
        queue_per_slot: int = 1,
        autoscaler_config: AutoscalerConfig = DEFAULT,
        index: int = 0,
        count: int = 1,
        rng: random.Random | None = None,
    ) -> None:
        self._probe = probe
        self._metrics = metrics
        self._queue_depth = queue_depth
        self._queue_per_slot = queue_per_slot
        self._autoscaler_config = autoscaler_config
        self._index = index
        self._count = count
        self._rng = rng if rng is not None else random.Random()
        self._entries: dict[RevisionKey, RevisionEntry] = {}
        self._synced = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, key: RevisionKey) -> RevisionEntry | None:
        return self._entries.get(key)

    def __iter__(self) -> Iterator[RevisionEntry]:
        return iter(list(self._entries.values()))

    def occupancy(self) -> Iterator[tuple[RevisionKey, int, int]]:
        for entry in list(self._entries.values()):
            yield entry.key, entry.throttler.waiting, entry.throttler.in_flight

    @property
    def synced(self) -> bool:
        """Whether at least one snapshot has been applied."""
        return self._synced.is_set()

    async def wait_synced(self, timeout: float) -> None:  # noqa: ASYNC109  # a bound, not a cancellation API
        """Wait up to `timeout` seconds for the first snapshot (`synced` tells whether it came)."""
        if not self._synced.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._synced.wait()

    def max_timeout(self) -> float:
        """The longest revision timeout: how long a queued request may still take after draining begins."""
        return max((e.timeout for e in self._entries.values()), default=0.0)

    def set_subset(self, index: int, count: int) -> None:
        """Which share of every revision's pods this activator sends to, when the number of activators
        changes (on Kubernetes, read from the activator Service's endpoints)."""
        if (index, count) == (self._index, self._count):
            return
        log.info("activator subset: %d of %d", index, count)
        self._index, self._count = index, count
        for entry in self._entries.values():
            entry.throttler.update_subset(index, count)

    def apply(self, snapshot: Snapshot) -> None:
        seen: set[RevisionKey] = set()
        for revision in snapshot.revisions:
            seen.add(revision.key)
            entry = self._entries.get(revision.key)
            if entry is None:
                throttler = RevisionThrottler(
                    container_concurrency=revision.container_concurrency,
                    queue_depth=self._queue_depth,
                    queue_per_slot=self._queue_per_slot,
                    index=self._index,
                    count=self._count,
                    rng=self._rng,
                )
                metrics = self._metrics.for_revision(revision.key)
                entry = self._entries[revision.key] = RevisionEntry(
                    revision, throttler, self._probe(revision.key), metrics
                )
            self._close_later(entry.update(revision))
            entry.throttler.update_max_scale(max_scale(revision, self._autoscaler_config))
        for key in [k for k in self._entries if k not in seen]:
            entry = self._entries.pop(key)
            log.info("revision %s is gone", key)
            self._metrics.forget(key, entry.metrics)
            self._spawn(self._close_entry(entry))
        self._synced.set()

    async def run(self, source: RevisionSource) -> None:
        """Apply the platform's snapshots as they come, forever."""
        async for snapshot in source.watch():
            self.apply(snapshot)

    async def close(self) -> None:
        entries = list(self._entries.values())
        self._entries.clear()
        for entry in entries:
            self._spawn(self._close_entry(entry))
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _close_entry(self, entry: RevisionEntry) -> None:
        await self._close_pools(await entry.close())

    def _close_later(self, pools: list[UpstreamPool | H2UpstreamPool]) -> None:
        if pools:
            self._spawn(self._close_pools(pools))

    @staticmethod
    async def _close_pools(pools: list[UpstreamPool | H2UpstreamPool]) -> None:
        for pool in pools:
            try:
                await pool.close()
            except Exception:  # task boundary: a pool that fails to close is only logged
                log.exception("closing the upstream pool of %s failed", pool.address)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
