"""The kubelet's readiness probe of a local pod: `GET /` on the queue-proxy with Knative's probe headers.

The queue-proxy answers 200 `queue` once its own probe of the app passed, and 503 while the app is not ready
or the queue-proxy is draining (in Knative's aggressive mode it holds the answer up to 10 s while it polls the
app, so a probe of a pod whose app never listens times out). When the app is to blame, `diagnose` looks at it
directly so that status can say why: nothing listening on its port, or its own probe answering 500.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import aiohttp

from controller.local.runtime.pod import READY, PodPorts, ProbeResult
from serving import header

USER_AGENT: Final = "kube-probe/1.30"
TIMEOUT: Final = 1.0
"""Seconds per attempt (Kubernetes' default probe timeoutSeconds)."""
_SHUTTING_DOWN: Final = b"shutting down"
"""The queue-proxy's 503 body while it drains: not the app's fault."""
_BODY_SHOWN: Final = 100
"""Characters of an unexpected probe answer quoted in the reason."""


class QueueProxyProbe:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._headers = {header.USER_AGENT: USER_AGENT, header.NETWORK_PROBE: header.PROBE_QUEUE}
        self._timeout = aiohttp.ClientTimeout(total=TIMEOUT)

    async def __call__(self, ports: PodPorts, token: str = "") -> ProbeResult:
        probe_url = f"http://127.0.0.1:{ports.serving}/"
        headers = {**self._headers, header.PROBE_TOKEN: token} if token else self._headers
        try:
            async with self._session.get(probe_url, headers=headers, timeout=self._timeout) as resp:
                body = (await resp.read()).strip()
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ConnectionRefusedError):
                return ProbeResult(False, f"not listening on port {ports.serving}")
            return ProbeResult(False, f"not accepting connections on port {ports.serving} ({exc.strerror})")
        except TimeoutError:
            return ProbeResult(False, f"its readiness probe got no answer within {TIMEOUT:g}s", user=True)
        except aiohttp.ClientError as exc:
            return ProbeResult(False, f"its readiness probe failed: {exc!r}")
        if resp.status == 200 and body == header.PROBE_QUEUE.encode():
            return READY
        said = f"{resp.status} {body[:_BODY_SHOWN].decode(errors='replace')}".rstrip()
        if resp.status == 503 and body != _SHUTTING_DOWN:
            return ProbeResult(False, f"not ready (the queue-proxy answers {said})", user=True)
        return ProbeResult(False, f"answering the readiness probe with {said}")

    async def diagnose(self, ports: PodPorts, http_path: str | None) -> str | None:
        """Connect to the app's port; if it listens and has an `httpGet` probe, GET it once (as the kubelet:
        a fresh connection, no redirects followed, 200-399 is success). None when nothing is wrong now."""
        port = ports.user
        try:
            async with asyncio.timeout(TIMEOUT):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return f"not listening on port {port}"
        except TimeoutError:
            return f"not accepting connections on port {port} within {TIMEOUT:g}s"
        except OSError as exc:
            return f"not accepting connections on port {port} ({exc.strerror or exc!r})"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        if http_path is None:
            return None
        probe = f"its readiness probe GET {http_path} on port {port}"
        headers = {header.USER_AGENT: USER_AGENT, "Connection": "close"}
        try:
            async with self._session.get(
                f"http://127.0.0.1:{port}{http_path}",
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                await resp.read()
        except TimeoutError:
            return f"{probe} got no answer within {TIMEOUT:g}s"
        except aiohttp.ClientError as exc:
            return f"{probe} failed: {exc!r}"
        if 200 <= resp.status < 400:
            return None
        return f"{probe} answers {resp.status}"
