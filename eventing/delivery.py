"""Delivering one event to one address with a Trigger's delivery policy: attempts with linear or exponential
back-off, a timeout per attempt, overload answers retried without spending the retry budget, then the
dead-letter sink with Knative's `knativeerror*` extensions.

Retried answers are Knative's: a network error or timeout, 404, 408, 409, 429 and 5xx. A `429` or `503` is the
data plane saying "not now" (the activator's buffer or a pod's breaker is full, a revision is waking): it is
retried, honouring `Retry-After`, for up to `OVERLOAD_PATIENCE` before it counts as a failed attempt, so a
burst into a Service at zero loses nothing even with `retry: 0`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

import aiohttp

from eventing.client import Client, ClientError, Target
from eventing.cloudevent import EventError, binary_headers, is_event, read_event
from eventing.event import Event
from serving.contract.eventing import DeliverySpec

log = logging.getLogger(__name__)

RETRIED: Final = frozenset({404, 408, 409, 429})
UNSENDABLE: Final = 0
"""The status of an attempt whose request could not be written (a header no HTTP message may carry): final."""
OVERLOAD: Final = frozenset({429, 503})
OVERLOAD_PATIENCE: Final = 300.0
"""Seconds an event keeps being offered to an overloaded subscriber before that counts as one failed attempt
(a Knative revision's default request timeout)."""
OVERLOAD_DELAY_MAX: Final = 5.0
"""Longest wait between two offers to an overloaded subscriber, whatever its `Retry-After` says."""
OVERLOAD_DELAY_GATED: Final = 0.1
"""Longest wait between two offers of one event when a gate paces a Trigger's attempts."""
DEFAULT_TIMEOUT: Final = 300.0
"""An attempt's limit when the delivery names no `timeout`: a Knative revision's default request timeout."""
TARGETS_KEPT: Final = 10_000
"""Parsed subscriber URLs remembered (a URL is parsed once, not per delivery); the memo is emptied past it."""
ERROR_DATA_MAX: Final = 1024
"""Bytes of a failed response's body carried base64 in `knativeerrordata` (the rest is cut)."""


@dataclass(slots=True)
class Attempt:
    status: int | None
    """None: no response (refused, reset, timed out)."""
    body: bytes = b""
    error: str = ""
    reply: Event | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retriable(self) -> bool:
        if self.status == UNSENDABLE:
            return False
        return self.status is None or self.status in RETRIED or self.status >= 500

    @property
    def overloaded(self) -> bool:
        return self.status in OVERLOAD


@dataclass(slots=True)
class Outcome:
    delivered: bool
    """The subscriber took it (2xx)."""
    dead_lettered: bool = False
    attempts: int = 1
    retries: int = 0
    reply: Event | None = None
    last: Attempt | None = None


Sleep = Callable[[float], Awaitable[Any]]


class Gate:
    """How many attempts of one Trigger may be out at once: additive increase while the subscriber takes
    events, halved (at most once per `COOL_DOWN`) when it answers that it is overloaded, never below 1. It is
    the concurrency a TCP sender finds by AIMD, applied to a subscriber behind a bounded queue.

    Waiters get their places first come, first served. One event loop, so no lock: a place is taken at once
    when one is free and nobody waits, and otherwise handed to the next waiter as it frees.
    """

    COOL_DOWN: Final = 0.1

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ceiling = limit
        self.limit = float(limit)
        self.active = 0
        self._clock = clock
        self._cut_at = -1.0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def _room(self) -> bool:
        return self.active < max(1, int(self.limit))

    def take(self) -> bool:
        """Take a place at once if one is free and nobody waits for one (give it back with `leave`); False:
        `wait` for one."""
        if not self._waiters and self._room():
            self.active += 1
            return True
        return False

    async def __aenter__(self) -> None:
        if not self.take():
            await self.wait()

    async def wait(self) -> None:
        """Until a place is handed on (first come, first served); it is taken for the caller."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # resolved with the place already taken for it (`_hand_on`)
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.active -= 1  # handed a place as it was cancelled: pass it on
                self._hand_on()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.leave()

    def leave(self) -> None:
        self.active -= 1
        self._hand_on()

    def _hand_on(self) -> None:
        waiters = self._waiters
        while waiters and self._room():
            waiter = waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)

    def observe(self, result: Attempt) -> None:
        if result.overloaded:
            now = self._clock()
            if now - self._cut_at >= self.COOL_DOWN:
                self._cut_at = now
                self.limit = max(1.0, self.limit / 2)
        elif result.ok and self.limit < self.ceiling:
            self.limit = min(float(self.ceiling), self.limit + 1 / self.limit)
            self._hand_on()  # the limit may have grown by a whole place


class Deliverer:
    def __init__(self, session: aiohttp.ClientSession, *, sleep: Sleep = asyncio.sleep) -> None:
        self._session = session
        self._sleep = sleep
        self._client = Client()
        self._targets: dict[str, Target | None] = {}
        self._aliases: dict[str, tuple[str, int]] = {}

    def set_aliases(self, aliases: Mapping[str, tuple[str, int]]) -> None:
        """Connect URLs whose `host[:port]` is a key to that (address, port) instead, keeping their Host (the
        platform's router for its Services, this component for its own Brokers)."""
        if aliases != self._aliases:
            self._aliases = dict(aliases)
            self._targets.clear()

    def close(self) -> None:
        self._client.close()

    async def attempt(self, url: str, event: Event, limit_s: float | None) -> Attempt:
        """One POST of `event` in binary mode, within `limit_s` seconds; never raises for a subscriber's
        failure. Plain http:// goes through the lean client, anything else through aiohttp."""
        timeout = limit_s or DEFAULT_TIMEOUT
        target = self._targets.get(url)
        if target is None and url not in self._targets:
            if len(self._targets) >= TARGETS_KEPT:
                self._targets.clear()
            target = self._targets[url] = Target.parse(url, self._aliases)
        if target is not None:
            return await self._lean_attempt(target, url, event, timeout)
        limit = aiohttp.ClientTimeout(total=timeout)
        try:
            async with self._session.post(
                url, data=event.data, headers=binary_headers(event), timeout=limit, allow_redirects=False
            ) as resp:
                body = await resp.read()
                reply = None
                if 200 <= resp.status < 300 and is_event(resp.headers):
                    try:
                        reply = read_event(resp.headers, body)
                    except EventError as exc:
                        log.warning("reply from %s is not a valid CloudEvent, dropped: %s", url, exc)
                return Attempt(resp.status, body, reply=reply, retry_after=_retry_after(resp.headers))
        except TimeoutError:
            return Attempt(None, error=f"no response within {timeout:g}s")
        except (aiohttp.ClientError, OSError) as failed:
            return Attempt(None, error=f"{type(failed).__name__}: {failed}")
        except (ValueError, UnicodeError) as unsendable:  # cannot be sent at all: final, to the dead letters
            return Attempt(UNSENDABLE, error=f"the request cannot be sent: {unsendable}")

    async def _lean_attempt(self, target: Target, url: str, event: Event, limit_s: float) -> Attempt:
        try:
            resp = await self._client.post(target, binary_headers(event), event.data, timeout=limit_s)
        except TimeoutError:
            return Attempt(None, error=f"no response within {limit_s:g}s")
        except (ClientError, OSError) as failed:
            return Attempt(None, error=str(failed))
        except (ValueError, UnicodeError) as unsendable:  # cannot be sent at all: final, to the dead letters
            return Attempt(UNSENDABLE, error=f"the request cannot be sent: {unsendable}")
        reply = None
        if 200 <= resp.status < 300 and is_event(resp.headers):
            try:
                reply = read_event(resp.headers, resp.body)
            except EventError as exc:
                log.warning("reply from %s is not a valid CloudEvent, dropped: %s", url, exc)
        return Attempt(resp.status, resp.body, reply=reply, retry_after=_retry_after(resp.headers))

    async def deliver(
        self, url: str, event: Event, policy: DeliverySpec, gate: Gate | None = None
    ) -> Outcome:
        """Offer `event` until it is taken or the policy is spent, then to the dead-letter sink if any.

        `gate` (a Trigger's) paces the attempts: each holds a place in it, and an overloaded answer narrows
        it, so that a Trigger sends a struggling subscriber only what it takes instead of a retry storm.
        """
        attempts = retries = 0
        overloaded_since: float | None = None
        overload_waits = 0
        while True:
            attempts += 1
            if gate is None:
                result = await self.attempt(url, event, policy.timeout)
            else:  # `async with gate`, without its two coroutines when a place is free
                if not gate.take():
                    await gate.wait()
                try:
                    result = await self.attempt(url, event, policy.timeout)
                finally:
                    gate.leave()
                gate.observe(result)
            if result.ok:
                return Outcome(True, attempts=attempts, retries=retries, reply=result.reply, last=result)
            if not result.retriable:
                break
            if result.overloaded:
                now = time.monotonic()
                overloaded_since = overloaded_since if overloaded_since is not None else now
                if now - overloaded_since < OVERLOAD_PATIENCE:
                    overload_waits += 1
                    delay = min(policy.backoff_delay * 2 ** min(overload_waits - 1, 8), OVERLOAD_DELAY_MAX)
                    if gate is not None:  # the gate paces the offers; the delay only spreads them
                        delay = min(delay, OVERLOAD_DELAY_GATED)
                    if result.retry_after is not None:
                        delay = min(max(delay, result.retry_after), OVERLOAD_DELAY_MAX)
                    retries += 1
                    await self._sleep(delay)
                    continue
                # Patience spent: from here on every overloaded answer counts against the retry budget.
            failed = attempts - overload_waits
            if failed > policy.retry:
                break
            retries += 1
            await self._sleep(backoff(policy, failed))
        dead = await self._dead_letter(url, event, policy, result)
        return Outcome(False, dead_lettered=dead, attempts=attempts, retries=retries, last=result)

    async def _dead_letter(self, url: str, event: Event, policy: DeliverySpec, failure: Attempt) -> bool:
        if policy.dead_letter_sink is None:
            log.warning(
                "event %s to %s dropped after %s: no dead-letter sink", event.id, url, _describe(failure)
            )
            return False
        attributes = dict(event.attributes)
        attributes["knativeerrordest"] = url
        if failure.status:
            attributes["knativeerrorcode"] = str(failure.status)
        data = failure.body[:ERROR_DATA_MAX] if failure.status else failure.error.encode()
        if data:
            attributes["knativeerrordata"] = base64.b64encode(data).decode()
        letter = replace(event, attributes=attributes)
        plain = replace(policy, dead_letter_sink=None)
        outcome = await self.deliver(policy.dead_letter_sink, letter, plain)
        if not outcome.delivered:
            log.error("event %s could not be dead-lettered to %s either", event.id, policy.dead_letter_sink)
        return outcome.delivered


def backoff(policy: DeliverySpec, retry: int) -> float:
    """Seconds before retry number `retry` (1-based): `backoffDelay * 2^(retry-1)`, or linear
    `backoffDelay * retry`."""
    if policy.backoff_policy == "linear":
        return policy.backoff_delay * retry
    return policy.backoff_delay * float(2 ** (retry - 1))


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the back-off applies


def _describe(attempt: Attempt) -> str:
    return f"status {attempt.status}" if attempt.status is not None else attempt.error
