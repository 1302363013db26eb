"""The kubelet's readiness probe of a local pod: `GET /` on the queue-proxy with Knative's probe headers.

The queue-proxy answers 200 `queue` once its own probe of the app passed, and 503 while the app is not ready
or the queue-proxy is draining.
"""

from __future__ import annotations

from typing import Final

import aiohttp

from controller.pod import PodPorts
from serving import header

USER_AGENT: Final = "kube-probe/1.30"
TIMEOUT: Final = 1.0
"""Seconds per attempt (Kubernetes' default probe timeoutSeconds)."""


class QueueProxyProbe:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._headers = {header.USER_AGENT: USER_AGENT, header.NETWORK_PROBE: header.PROBE_QUEUE}
        self._timeout = aiohttp.ClientTimeout(total=TIMEOUT)

    async def __call__(self, ports: PodPorts) -> bool:
        probe_url = f"http://127.0.0.1:{ports.serving}/"
        try:
            async with self._session.get(probe_url, headers=self._headers, timeout=self._timeout) as resp:
                body = await resp.read()
                return resp.status == 200 and body.strip() == header.PROBE_QUEUE.encode()
        except (aiohttp.ClientError, TimeoutError):
            return False
