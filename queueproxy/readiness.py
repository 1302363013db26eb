"""Readiness of the app, found by running its probe (TCP connect, HTTP GET or gRPC health check) from inside
the pod.

Health checks that reach the queue-proxy call `Readiness.check`. Concurrent callers share one in-flight
check, so a burst of probes costs the app one probe. Aggressive mode (period 0, Knative's default) keeps
trying every 50 ms for up to 10 s so that a pod turns ready as soon as its app listens.

A TCP probe of an IP address is a bare non-blocking connect whose outcome is read once the socket turns
writable: half the CPU of an event-loop connection with its transport and streams, which matters when many
pods start on a few CPUs at once, each probing its app 20 times a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import Final

from queueproxy import h1probe
from queueproxy.probe import ProbeSpec

logger = logging.getLogger(__name__)

# Knative's aggressive probing: attempt every 50 ms, 100 ms per attempt, give up after 10 s.
RETRY_INTERVAL: Final = 0.05
AGGRESSIVE_ATTEMPT_TIMEOUT: Final = 0.1
AGGRESSIVE_POLL_TIMEOUT: Final = 10.0

USER_AGENT: Final = "kube-probe/1.30"
"""Kubelet's probe User-Agent (`kube-probe/<major>.<minor>`); apps commonly recognise the prefix."""


class Readiness:
    """Runs the probe on demand and remembers the consecutive success/failure counts between calls.

    Aggressive mode: each check polls until `success_threshold` successes in a row or the poll timeout.
    Periodic mode: at most one attempt per `period`; the app turns ready after `success_threshold`
    successes in a row and unready after `failure_threshold` failures in a row (kubelet's rule).
    """

    def __init__(
        self,
        spec: ProbeSpec,
        user_port: int,
        *,
        retry_interval: float = RETRY_INTERVAL,
        aggressive_attempt_timeout: float = AGGRESSIVE_ATTEMPT_TIMEOUT,
        aggressive_poll_timeout: float = AGGRESSIVE_POLL_TIMEOUT,
        now: Callable[[], float] = time.monotonic,
        http2: bool = False,
    ) -> None:
        self.spec = spec
        self._http2 = http2
        """The app speaks HTTP/2 cleartext (an h2c port): an `httpGet` probe goes over HTTP/2."""
        self.port = spec.resolved_port(user_port)
        self._family = _address_family(spec.host)
        """AF_INET/AF_INET6 when the probe's host is an IP address (the fast TCP path), else None."""
        self._retry_interval = retry_interval
        self._attempt_timeout = aggressive_attempt_timeout
        self._poll_timeout = aggressive_poll_timeout
        self._now = now
        self._pending: asyncio.Task[bool] | None = None
        self._ready = False
        self._successes = 0
        self._failures = 0
        self._last_attempt: float | None = None

    @property
    def ready(self) -> bool:
        """The result of the last completed check."""
        return self._ready

    async def check(self) -> bool:
        """Whether the app is ready; joins a check already under way instead of starting another."""
        if self._pending is None:
            self._pending = asyncio.create_task(self._run())
            self._pending.add_done_callback(self._clear)
        # Shielded: one caller leaving (its client went away) must not cancel the others' check.
        return await asyncio.shield(self._pending)

    async def check_now(self) -> bool:
        """Whether the app is ready *and* answers its probe now: for the activator's probe, which decides
        where requests go next.

        In periodic mode `check` follows kubelet's rule (a result stands for `period`, and a ready app turns
        unready only after `failure_threshold` failures in a row), so it calls an app that just died ready
        for seconds; this adds one fresh attempt. An aggressive check is fresh already.
        """
        if not await self.check():
            return False
        return self.spec.aggressive or await self.attempt(self.spec.timeout)

    def _clear(self, task: asyncio.Task[bool]) -> None:
        if self._pending is task:
            self._pending = None
        if not task.cancelled() and task.exception() is not None:
            logger.error("readiness check failed unexpectedly", exc_info=task.exception())

    async def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pending

    async def _run(self) -> bool:
        if self.spec.aggressive:
            self._ready = await self._poll()
        else:
            self._ready = await self._periodic()
        return self._ready

    async def _poll(self) -> bool:
        deadline = self._now() + self._poll_timeout
        successes = 0
        while True:
            successes = successes + 1 if await self.attempt(self._attempt_timeout) else 0
            if successes >= self.spec.success_threshold:
                return True
            if self._now() + self._retry_interval > deadline:
                return False
            await asyncio.sleep(self._retry_interval)

    async def _periodic(self) -> bool:
        now = self._now()
        if self._last_attempt is not None and now - self._last_attempt < self.spec.period:
            return self._ready
        self._last_attempt = now
        if await self.attempt(self.spec.timeout):
            self._successes += 1
            self._failures = 0
            if self._successes >= self.spec.success_threshold:
                return True
        else:
            self._failures += 1
            self._successes = 0
            if self._failures >= self.spec.failure_threshold:
                return False
        return self._ready

    async def attempt(self, limit: float) -> bool:
        """One probe attempt within `limit` seconds; any error, an HTTP status outside 200-399 or a gRPC
        health reply other than SERVING is a failure."""
        try:
            async with asyncio.timeout(limit):
                if self.spec.kind == "tcp":
                    return await self._tcp()
                if self.spec.kind == "grpc" or (self._http2 and self.spec.scheme == "http"):
                    return await self._h2()
                return await self._http()
        except (OSError, TimeoutError, ValueError, h1probe.ProbeFailed) as exc:
            logger.debug("readiness probe failed: %s", exc)
            return False

    async def _tcp(self) -> bool:
        if self._family is not None:
            return await self._connect(self._family)
        _, writer = await asyncio.open_connection(self.spec.host, self.port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _connect(self, family: socket.AddressFamily) -> bool:
        """A bare non-blocking connect to an IP address: no transport, no stream objects."""
        loop = asyncio.get_running_loop()
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            code = sock.connect_ex((self.spec.host, self.port))
            if code == errno.EINPROGRESS:
                done: asyncio.Future[None] = loop.create_future()
                loop.add_writer(sock, _resolve, done)
                try:
                    await done
                finally:
                    loop.remove_writer(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            logger.debug("readiness probe failed: port %d: %s", self.port, errno.errorcode.get(code))
            return False
        return True

    async def _http(self) -> bool:
        spec = self.spec
        status = await h1probe.http_get(
            spec.host, self.port, spec.path, self._headers(), tls=spec.scheme == "https"
        )
        return 200 <= status < 400

    async def _h2(self) -> bool:
        """A probe over HTTP/2: gRPC's health check, or an `httpGet` of an h2c app."""
        import h2.exceptions  # HTTP/2 is loaded only by the pods that probe with it

        from queueproxy import h2probe

        spec = self.spec
        try:
            if spec.kind == "grpc":
                await h2probe.grpc_health(spec.host, self.port, spec.service, USER_AGENT)
                return True
            status = await h2probe.http_get(spec.host, self.port, spec.path, self._headers())
        except (h2probe.ProbeFailed, h2.exceptions.ProtocolError) as exc:
            logger.debug("readiness probe failed: %s", exc)
            return False
        return 200 <= status < 400

    def _headers(self) -> list[tuple[str, str]]:
        """kubelet's `User-Agent` and `Accept`, unless the probe's `httpHeaders` set them, then those."""
        own = {name.lower() for name, _ in self.spec.headers}
        defaults = [
            (n, v) for n, v in (("User-Agent", USER_AGENT), ("Accept", "*/*")) if n.lower() not in own
        ]
        return [*defaults, *self.spec.headers]


def _resolve(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


def _address_family(host: str) -> socket.AddressFamily | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: resolved by the loop, never by a blocking lookup here
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET
