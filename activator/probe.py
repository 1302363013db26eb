"""The activator's direct probe of a pod's queue-proxy, as Knative's activator sends it.

`GET /healthz` with `K-Network-Probe: queue` and `User-Agent: Knative-Activator-Probe`; the pod is ready when
the queue-proxy answers 200 with the body `queue`. Each probe gives up after 300 ms (Knative's probe timeout).
"""

from __future__ import annotations

from typing import Final

import aiohttp

from serving import header
from serving.platform import Pod

PROBE_TIMEOUT: Final = 0.3
"""Seconds one probe may take (Knative's activator probe timeout)."""
PROBE_PATH: Final = "/healthz"
_HEADERS: Final = {
    header.NETWORK_PROBE: header.PROBE_QUEUE,
    header.USER_AGENT: header.ACTIVATOR_PROBE_UA,
}


class HttpProbe:
    """Probes pods over a shared aiohttp session (probes are not on the request hot path)."""

    __slots__ = ("_session", "_timeout")

    def __init__(self, session: aiohttp.ClientSession, timeout: float = PROBE_TIMEOUT) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def __call__(self, pod: Pod) -> bool:
        url = f"http://{pod.host}:{pod.port}{PROBE_PATH}"
        try:
            async with self._session.get(url, headers=_HEADERS, timeout=self._timeout) as resp:
                if resp.status != 200:
                    return False
                return (await resp.read()) == header.PROBE_QUEUE.encode()
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False
