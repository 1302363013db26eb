"""Requests waiting in the activator per revision, read from its Prometheus metrics for the live view.

Only that one gauge is asked for (`?name[]=`): the full exposition grows with every revision's histogram,
and the view reads it every second.
"""

from __future__ import annotations

import logging
from typing import Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from serving.platform import RevisionKey

log = logging.getLogger(__name__)

METRIC: Final = "activator_requests_queued"


def parse_queued(text: str) -> dict[RevisionKey, int]:
    queued: dict[RevisionKey, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name != METRIC:
            continue
        for sample in family.samples:
            labels = sample.labels
            if "namespace" in labels and "revision" in labels:
                queued[RevisionKey(labels["namespace"], labels["revision"])] = int(sample.value)
    return queued


class QueueGauge:
    """The last scrape; None for every revision while the activator's metrics cannot be read."""

    def __init__(self, metrics_url: str, session: aiohttp.ClientSession) -> None:
        self._url = metrics_url
        self._params = {"name[]": METRIC}
        self._session = session
        self._queued: dict[RevisionKey, int] | None = None

    def get(self, key: RevisionKey) -> int | None:
        return None if self._queued is None else self._queued.get(key, 0)

    async def scrape(self) -> None:
        try:
            async with self._session.get(
                self._url, params=self._params, timeout=aiohttp.ClientTimeout(total=1.0)
            ) as resp:
                text = await resp.text()
                self._queued = parse_queued(text) if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            self._queued = None
