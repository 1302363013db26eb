"""Scrapes a revision's queue-proxies (protobuf `Stat` on the stats port) and estimates the revision's load.

Knative's sampling: of N ready pods it scrapes n = N when N ≤ 3, else ceil(N*X / (N + X - 1)) with
X = 1.96²*100/5² (95 % confidence, margin 5, variance 100), preferring pods older than the stable window
(young pods under-report), and scales the sum by N/n. A pod that fails is replaced by the next one in line;
when too few answer, the whole scrape fails and nothing is recorded for that second.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from autoscaler.statclient import StatClient, StatFetchError
from serving.platform import Pod
from serving.stat import Stat

log = logging.getLogger(__name__)

SCRAPE_INTERVAL: Final = 1.0
"""Seconds between scrapes of a revision (Knative's scrapeTickInterval)."""
_CRITICAL_VALUE_SQUARED: Final = 1.96 * 1.96  # normal distribution, 95 % confidence
_MARGIN_OF_ERROR_SQUARED: Final = 5.0 * 5.0
_POPULATION_VARIANCE: Final = 100.0
SAMPLE_CONSTANT: Final = _CRITICAL_VALUE_SQUARED * _POPULATION_VARIANCE / _MARGIN_OF_ERROR_SQUARED
"""X ≈ 15.37: the sample size an unbounded population would need."""
SCRAPER_POD_NAME: Final = "service-scraper"
"""`pod_name` of the revision-wide stat a scrape produces (Knative's name)."""


def sample_size(population: int) -> int:
    """How many of `population` ready pods to scrape (Knative's formula)."""
    if population <= 3:
        return max(population, 0)
    return math.ceil(population * SAMPLE_CONSTANT / (population + SAMPLE_CONSTANT - 1))


class ScrapeError(Exception):
    """Too few pods answered to estimate the revision's load."""


@dataclass(frozen=True, slots=True)
class ScrapeResult:
    stat: Stat
    """Revision-wide estimate: the sampled pods' sum scaled to the ready population."""
    pod_concurrency: dict[str, float]
    """Average concurrency of each sampled pod, by pod name (for choosing the idlest pods to remove)."""
    sampled: int
    population: int


def scale_to_population(stats: Sequence[Stat], sample: int, population: int) -> Stat:
    """Sum the sampled stats and extrapolate to the whole population (sum / sample * population)."""
    concurrency = proxied = count = proxied_count = 0.0
    for stat in stats:
        concurrency += stat.average_concurrent_requests
        proxied += stat.average_proxied_concurrent_requests
        count += stat.request_count
        proxied_count += stat.proxied_request_count
    return Stat(
        pod_name=SCRAPER_POD_NAME,
        average_concurrent_requests=concurrency / sample * population,
        average_proxied_concurrent_requests=proxied / sample * population,
        request_count=count / sample * population,
        proxied_request_count=proxied_count / sample * population,
    )


class Scraper:
    """Scrapes pods over keep-alive connections; each request has its own timeout so that a silent pod costs
    at most that and never blocks other revisions (each revision's scrape is its own task)."""

    __slots__ = ("_client", "_rng")

    def __init__(self, client: StatClient, *, rng: random.Random | None = None) -> None:
        self._client = client
        self._rng = rng or random.Random()

    async def fetch(self, pod: Pod) -> Stat:
        """One pod's last reported `Stat` from `GET /metrics` on its stats port."""
        return await self._client.fetch(pod.host, pod.stats_port)

    def order(self, pods: Sequence[Pod], window: float, wall_now: float) -> tuple[list[Pod], int]:
        """Ready pods in scrape order (older than `window` first) and the sample size.

        When the old pods alone fill the sample they are shuffled and young ones follow only as backups;
        otherwise every old pod is used and the young ones are shuffled.
        """
        ready = [p for p in pods if p.ready]
        older = [p for p in ready if wall_now - p.started_at > window]
        younger = [p for p in ready if wall_now - p.started_at <= window]
        size = sample_size(len(ready))
        if len(older) < size:
            self._rng.shuffle(younger)
        else:
            self._rng.shuffle(older)
        return older + younger, size

    async def scrape(self, pods: Sequence[Pod], window: float, wall_now: float) -> ScrapeResult | None:
        """Estimate the revision's load from its ready pods; None when it has none (nothing to record).

        `wall_now` is Unix time, compared with `Pod.started_at`. Raises `ScrapeError` when fewer pods than
        the sample size answered.
        """
        order, size = self.order(pods, window, wall_now)
        if size == 0:
            return None
        candidates = iter(order)
        results: list[tuple[Pod, Stat]] = []
        failures: list[str] = []

        async def worker() -> bool:
            for pod in candidates:  # shared: each pod is tried by one worker only
                try:
                    stat = await self.fetch(pod)
                except (StatFetchError, TimeoutError, OSError) as exc:
                    failures.append(f"{pod.name}: {str(exc) or type(exc).__name__}")
                    continue
                results.append((pod, stat))
                return True
            return False

        if size == 1:
            outcomes = [await worker()]  # the common one-pod revision: no extra task
        else:
            outcomes = await asyncio.gather(*(worker() for _ in range(size)))
        if not all(outcomes):
            raise ScrapeError(
                f"only {len(results)} of {size} sampled pods answered ({len(order)} ready): "
                + "; ".join(failures[:3])
            )
        return ScrapeResult(
            stat=scale_to_population([stat for _, stat in results], size, len(order)),
            pod_concurrency={pod.name: stat.average_concurrent_requests for pod, stat in results},
            sampled=size,
            population=len(order),
        )
