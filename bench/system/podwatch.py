"""Watches a running `serving up` during a benchmark: pods per revision over time, and each pod's life."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from serving.platformclient import HttpPlatform

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class PodPoint:
    """One observation of a revision's pods, `t` seconds after the run's start."""

    t: float
    revision: str
    desired: int | None
    actual: int
    ready: int
    mode: str | None


def pod_points(status: dict[str, Any], t: float) -> list[PodPoint]:
    """One point per revision of every service in a status document."""
    points = []
    for svc in status.get("services", []):
        for rev in svc.get("revisions", []):
            desired = rev.get("desired_pods")
            points.append(
                PodPoint(
                    t=t,
                    revision=str(rev["name"]),
                    desired=None if desired is None else int(desired),
                    actual=int(rev.get("actual_pods", 0)),
                    ready=int(rev.get("ready_pods", 0)),
                    mode=rev.get("mode"),
                )
            )
    return points


class StatusPoller:
    """Polls `{control_url}/status` every `interval` seconds (the document `serving status --json` prints)
    for the pods-over-time plot; points are timed against `t0` (monotonic)."""

    def __init__(
        self, control_url: str, session: aiohttp.ClientSession, t0: float, interval: float = 1.0
    ) -> None:
        self._url = control_url.rstrip("/") + "/status"
        self._session = session
        self._t0 = t0
        self._interval = interval
        self.points: list[PodPoint] = []
        self.last: dict[str, Any] | None = None

    async def fetch(self) -> dict[str, Any]:
        async with self._session.get(self._url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            resp.raise_for_status()
            data: dict[str, Any] = await resp.json()
            return data

    async def poll_once(self) -> None:
        try:
            status = await self.fetch()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("status poll failed: %s", exc)
            return
        self.last = status
        self.points += pod_points(status, time.monotonic() - self._t0)

    async def run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self._interval)


@dataclass(slots=True, kw_only=True)
class PodLife:
    revision: str
    pod: str
    started_at: float
    """Unix time the platform started the pod's processes."""
    ready_at: float | None = None
    """Unix time this watcher first saw the pod ready (the push arrives within milliseconds)."""


class PodLifecycle:
    """Records every pod's start and first-ready time from the platform's watch stream, which pushes a
    snapshot on every change: within milliseconds, so the parts of a cold start can be told apart."""

    def __init__(self, platform_url: str, session: aiohttp.ClientSession) -> None:
        self._platform = HttpPlatform(platform_url, session)
        self.pods: dict[str, PodLife] = {}

    async def run(self) -> None:
        async for snapshot in self._platform.watch():
            now = time.time()
            for rev in snapshot.revisions:
                for pod in rev.pods:
                    life = self.pods.get(pod.name)
                    if life is None:
                        life = self.pods[pod.name] = PodLife(
                            revision=rev.key.name, pod=pod.name, started_at=pod.started_at
                        )
                    if pod.ready and life.ready_at is None:
                        life.ready_at = now

    def first_pod(self, revision: str) -> PodLife | None:
        lives = [p for p in self.pods.values() if p.revision == revision]
        return min(lives, key=lambda p: p.started_at, default=None)


@contextlib.asynccontextmanager
async def running(*watchers: StatusPoller | PodLifecycle) -> AsyncIterator[None]:
    """Run the watchers in the background for the body of the `async with`."""
    tasks = [asyncio.create_task(w.run()) for w in watchers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
