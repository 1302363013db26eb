"""Client of the local platform API (see `serving.platform` for the wire format).

`HttpPlatform` implements both `RevisionSource` and `Actuator` over aiohttp. The watch reconnects forever
with capped backoff and always starts with a full snapshot, so a restarted controller or a dropped stream
costs one snapshot and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator

import aiohttp

from serving.platform import (
    RevisionKey,
    ScalerStatus,
    Snapshot,
    snapshot_from_json,
    status_to_json,
)

log = logging.getLogger(__name__)

_BACKOFF_START = 0.05
_BACKOFF_MAX = 2.0


class PlatformError(Exception):
    """The platform API refused or failed a call."""


class HttpPlatform:
    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self._base = base_url.rstrip("/")
        self._session = session

    async def snapshot(self) -> Snapshot:
        async with self._session.get(f"{self._base}/v1/revisions") as resp:
            if resp.status != 200:
                raise PlatformError(f"GET /v1/revisions: HTTP {resp.status}")
            return snapshot_from_json(await resp.json())

    async def watch(self) -> AsyncGenerator[Snapshot, None]:
        backoff = _BACKOFF_START
        url = f"{self._base}/v1/revisions?watch=true"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        while True:
            try:
                async with self._session.get(url, timeout=timeout) as resp:
                    if resp.status != 200:
                        raise PlatformError(f"watch: HTTP {resp.status}")
                    backoff = _BACKOFF_START
                    async for line in resp.content:
                        if line.strip():
                            yield snapshot_from_json(json.loads(line))
            except (aiohttp.ClientError, PlatformError, ValueError, KeyError) as exc:
                log.warning("platform watch interrupted (%s); reconnecting in %.2fs", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def scale(self, key: RevisionKey, replicas: int, remove: list[str]) -> None:
        url = f"{self._base}/v1/revisions/{key.namespace}/{key.name}/scale"
        async with self._session.post(url, json={"replicas": replicas, "remove": remove}) as resp:
            if resp.status != 200:
                raise PlatformError(f"scale {key}: HTTP {resp.status}: {await resp.text()}")

    async def publish(self, key: RevisionKey, status: ScalerStatus) -> None:
        url = f"{self._base}/v1/revisions/{key.namespace}/{key.name}/status"
        async with self._session.put(url, json=status_to_json(status)) as resp:
            if resp.status != 200:
                raise PlatformError(f"status {key}: HTTP {resp.status}: {await resp.text()}")
