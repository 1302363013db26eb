"""The autoscaler's view of this pod: a protobuf `Stat` per 1 s window on `:QUEUE_STATS_PORT/metrics`.

The handler feeds `RequestStats` on every request; `run_reporter` closes a window every second and keeps the
encoded result, which every scrape returns unchanged (scraping does not reset anything), as Knative does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

from serving.concurrency import RequestStats
from serving.http import Exchange
from serving.http.endpoints import Endpoint
from serving.stat import PROTOBUF_CONTENT_TYPE, Stat, encode_stat

REPORT_INTERVAL: Final = 1.0
"""Seconds per reporting window (Knative's queue-proxy reports every second)."""


class StatReporter:
    """Closes windows of `stats` and keeps the last one encoded for scrapers."""

    __slots__ = ("_now", "_started", "_unix_ns", "last", "pod_name", "stats")

    def __init__(
        self,
        stats: RequestStats,
        pod_name: str,
        *,
        now: Callable[[], float] = time.monotonic,
        unix_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.stats = stats
        self.pod_name = pod_name
        self._now = now
        self._unix_ns = unix_ns
        self._started = now()
        self.last = Stat(pod_name=pod_name, timestamp=unix_ns())
        """The last completed window; empty until the first window closes."""

    def report(self) -> Stat:
        """Close the current window and make it the one scrapers see."""
        now = self._now()
        window = self.stats.report(now)
        self.last = Stat(
            pod_name=self.pod_name,
            average_concurrent_requests=window.average_concurrency,
            average_proxied_concurrent_requests=window.average_proxied_concurrency,
            request_count=window.request_count,
            proxied_request_count=window.proxied_request_count,
            process_uptime=now - self._started,
            timestamp=self._unix_ns(),
        )
        return self.last


async def run_reporter(reporter: StatReporter, interval: float = REPORT_INTERVAL) -> None:
    """Close a window every `interval` seconds, on a schedule that does not drift with the loop's load."""
    loop = asyncio.get_running_loop()
    next_tick = loop.time() + interval
    while True:
        await asyncio.sleep(max(0.0, next_tick - loop.time()))
        reporter.report()
        next_tick += interval
        if next_tick < loop.time():  # the loop stalled for more than a window: skip, do not burst
            next_tick = loop.time() + interval


def stats_routes(reporter: StatReporter) -> dict[str, Endpoint]:
    """`GET /metrics`: the last closed window, protobuf-encoded."""

    async def metrics(exchange: Exchange) -> None:
        body = encode_stat(reporter.last)
        await exchange.respond(200, (("content-type", PROTOBUF_CONTENT_TYPE),), body)

    return {"/metrics": metrics}
