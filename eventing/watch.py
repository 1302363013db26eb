"""The Eventing objects as the platform serves them: `GET /v1/eventing?watch=true` streams one JSON line per
change (Brokers, Triggers with resolved subscribers, sources), reconnecting with back-off when it breaks."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Final

import aiohttp

from serving.contract.eventing import TOKEN_HEADER, EventingSpec, spec_from_json

log = logging.getLogger(__name__)

_BACKOFF_START: Final = 0.1
_BACKOFF_MAX: Final = 5.0


class WatchError(Exception):
    pass


async def watch_spec(
    session: aiohttp.ClientSession, base_url: str, token: str
) -> AsyncIterator[EventingSpec]:
    """Every version of the Eventing objects, the current one first; runs until cancelled."""
    url = f"{base_url.rstrip('/')}/v1/eventing?watch=true"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    backoff = _BACKOFF_START
    while True:
        try:
            async with session.get(url, timeout=timeout, headers={TOKEN_HEADER: token}) as resp:
                if resp.status != 200:
                    raise WatchError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
                backoff = _BACKOFF_START
                pending = b""
                async for chunk in resp.content.iter_any():
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield spec_from_json(json.loads(line))
        except (aiohttp.ClientError, WatchError, ValueError, KeyError, TypeError) as exc:
            log.warning("eventing watch interrupted (%s); reconnecting in %.2fs", exc, backoff)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, _BACKOFF_MAX)
