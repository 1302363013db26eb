"""Checks that the activator is in the request path before a revision loses its last pod.

Knative's autoscaler probes the revision's public endpoint with `K-Network-Probe: activator` and expects
`200 activator`; locally that endpoint is the activator itself (`ACTIVATOR_URL`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Protocol

import aiohttp

from serving import header

log = logging.getLogger(__name__)

PROBE_TIMEOUT: Final = 1.0
"""Seconds one probe may take."""
CACHE_SECONDS: Final = 1.0
"""A probe result is reused this long: one probe serves every revision going to zero in the same tick."""


class ActivatorProbe(Protocol):
    async def __call__(self) -> bool: ...


class AssumeActivatorInPath:
    """No activator endpoint configured: take it as in the path (it is, whenever routing uses it)."""

    async def __call__(self) -> bool:
        return True


class HttpActivatorProbe:
    __slots__ = ("_cached", "_clock", "_session", "_url")

    def __init__(self, session: aiohttp.ClientSession, url: str, clock: Callable[[], float]) -> None:
        self._session = session
        self._url = url.rstrip("/") + "/healthz"
        self._clock = clock
        self._cached: tuple[float, bool] | None = None

    async def __call__(self) -> bool:
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < CACHE_SECONDS:
            return self._cached[1]
        result = await self._probe()
        self._cached = (self._clock(), result)
        return result

    async def _probe(self) -> bool:
        headers = {
            header.NETWORK_PROBE: header.PROBE_ACTIVATOR,
            header.USER_AGENT: header.AUTOSCALING_PROBE_UA,
        }
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
        try:
            async with self._session.get(self._url, headers=headers, timeout=timeout) as resp:
                body = await resp.read()
                ok = resp.status == 200 and body == header.PROBE_ACTIVATOR.encode()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("activator probe %s failed: %s", self._url, str(exc) or type(exc).__name__)
            return False
        if not ok:
            log.warning("activator probe %s: HTTP %d, not the activator", self._url, resp.status)
        return ok
