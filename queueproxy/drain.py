"""Graceful drain: fail probes at once, keep serving until traffic stops, then let in-flight work finish.

After SIGTERM (or a `GET /wait-for-drain` from the app's preStop hook) health checks answer 503 so that load
balancers stop sending; requests that still arrive are served and push the end of the drain back by the quiet
period. A wait-for-drain that is not followed by SIGTERM within a second is a liveness restart of the app
container, not a pod deletion, so the drain is called off again (Knative does the same).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

from queueproxy.inflight import InFlight
from serving.http import Exchange
from serving.http.endpoints import TEXT, Endpoint

logger = logging.getLogger(__name__)

WAIT_FOR_DRAIN_PATH: Final = "/wait-for-drain"
RESET_AFTER: Final = 1.0
"""Seconds a wait-for-drain waits for SIGTERM before calling the drain off (Knative's value)."""


class Drainer:
    """Tracks whether the pod is draining and when the last request arrived.

    `last_request` is written by the request handler on every proxied request (one attribute store, cheap
    enough for the hot path); the drain ends once `quiet_period` passed since the later of the drain's
    start and the last request.
    """

    __slots__ = ("_changed", "_drained", "_now", "_started", "draining", "last_request", "quiet_period")

    def __init__(self, quiet_period: float, *, now: Callable[[], float] = time.monotonic) -> None:
        self.quiet_period = quiet_period
        self._now = now
        self.draining = False
        self.last_request = now()
        self._started = 0.0
        self._drained = False
        self._changed = asyncio.Event()

    def begin(self) -> None:
        """Start draining (idempotent): from now on health checks fail."""
        if not self.draining:
            logger.info("draining: health checks now fail; quiet period %.3gs", self.quiet_period)
            self.draining = True
            self._drained = False
            self._started = self._now()

    def reset(self) -> None:
        """Call the drain off: health checks pass again and every waiter returns."""
        if self.draining:
            logger.info("drain called off (no SIGTERM followed wait-for-drain): serving normally")
        self.draining = False
        self._drained = False
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_reset(self) -> None:
        """Return once the drain is called off (at once if it is not on)."""
        while self.draining:
            await self._changed.wait()

    async def wait(self) -> bool:
        """Begin draining and wait for the quiet period; True once drained, False if the drain was reset."""
        self.begin()
        while not self._drained:
            changed = self._changed
            remaining = max(self._started, self.last_request) + self.quiet_period - self._now()
            if remaining <= 0:
                self._drained = True
                logger.info("drained: no request for %.3gs", self.quiet_period)
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed.wait()
            if not self.draining:
                return False
        return True


def admin_routes(
    drainer: Drainer, terminating: asyncio.Event, in_flight: InFlight, *, reset_after: float = RESET_AFTER
) -> dict[str, Endpoint]:
    """`GET /wait-for-drain`: the app container's preStop hook blocks here until the pod is drained: the
    quiet period passed with no new request, and no plain request handed to the app is still in flight
    (websockets are not waited for: they get `DRAIN_WEBSOCKET_TIMEOUT` from the queue-proxy's own drain).

    Without SIGTERM within `reset_after` the call was a liveness restart: the drain is called off, and the
    call returns. That check outlives the call itself, so a hook whose client gave up early still leaves a
    pod that serves again.
    """
    watchdogs: set[asyncio.Task[None]] = set()

    async def reset_unless_terminating() -> None:
        await asyncio.sleep(reset_after)
        if not terminating.is_set():
            drainer.reset()

    async def wait_for_drain(exchange: Exchange) -> None:
        logger.info("wait-for-drain called by %s", exchange.request.client[0])
        watchdog = asyncio.create_task(reset_unless_terminating())
        watchdogs.add(watchdog)
        watchdog.add_done_callback(watchdogs.discard)
        if await drainer.wait():
            # Drained of new requests; now the ones in flight, unless the drain is called off meanwhile.
            idle = asyncio.ensure_future(in_flight.wait_plain())
            called_off = asyncio.ensure_future(drainer.wait_reset())
            try:
                await asyncio.wait({idle, called_off}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                idle.cancel()
                called_off.cancel()
        await exchange.respond(200, (TEXT,), b"drained\n")

    return {WAIT_FOR_DRAIN_PATH: wait_for_drain}
