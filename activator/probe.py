"""The activator's direct probe of a pod's queue-proxy, as Knative's activator sends it.

`GET /healthz` with `K-Network-Probe: queue` and `User-Agent: Knative-Activator-Probe` (and the revision's
probe token when the platform has a probe secret); the pod is ready when the queue-proxy answers 200 with the
body `queue`. Each probe gives up after 300 ms (Knative's probe timeout).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import aiohttp

from serving import header
from serving.contract.probe import probe_token
from serving.platform import Pod, RevisionKey

PROBE_TIMEOUT: Final = 0.3
"""Seconds one probe may take (Knative's activator probe timeout)."""
PROBE_PATH: Final = "/healthz"
_HEADERS: Final = {
    header.NETWORK_PROBE: header.PROBE_QUEUE,
    header.USER_AGENT: header.ACTIVATOR_PROBE_UA,
}


class HttpProbe:
    """Probes pods over a shared aiohttp session (probes are not on the request hot path)."""

    __slots__ = ("_secret", "_session", "_timeout")

    def __init__(
        self, session: aiohttp.ClientSession, timeout: float = PROBE_TIMEOUT, *, secret: str = ""
    ) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._secret = secret

    def for_revision(self, key: RevisionKey) -> Callable[[Pod], Awaitable[bool]]:
        """The probe of one revision's pods, carrying its token when the platform has a probe secret."""
        token = probe_token(self._secret, key.namespace, key.name)
        headers = {**_HEADERS, header.PROBE_TOKEN: token} if token else _HEADERS
        return lambda pod: self._probe(pod, headers)

    async def _probe(self, pod: Pod, headers: dict[str, str]) -> bool:
        url = f"http://{pod.host}:{pod.port}{PROBE_PATH}"
        try:
            async with self._session.get(url, headers=headers, timeout=self._timeout) as resp:
                if resp.status != 200:
                    return False
                return (await resp.read()) == header.PROBE_QUEUE.encode()
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False
