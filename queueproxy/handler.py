"""The queue-proxy's per-request path: answer health checks itself, admit the rest, forward them to the app.

Per proxied request: one scan of the request head, the header rules, stats in/out, the breaker (when
containerConcurrency > 0), an in-flight entry carrying the total deadline, the engine's forward, one metrics
observation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, Protocol

from queueproxy.drain import Drainer
from queueproxy.inflight import InFlight
from queueproxy.metrics import RequestMetrics
from queueproxy.readiness import Readiness
from queueproxy.requestlog import RequestLog
from queueproxy.rewrite import prepare, scan
from queueproxy.status import HANDLED, RequestTimeout, response_for
from serving import header
from serving.breaker import Breaker
from serving.concurrency import RequestStats
from serving.contract.probe import token_matches
from serving.http import ForwardTimeouts, Headers, Request, UpstreamPool
from serving.tally import RequestTally
from serving.tracer import QUEUE_WAIT, Tracer

if TYPE_CHECKING:
    from serving.http import H2UpstreamPool

CLIENT_GONE: Final = 499
"""Recorded (never sent) when the client left before its response ended; nginx's convention."""

_TEXT: Final = (("content-type", "text/plain; charset=utf-8"),)


class ProxiedExchange(Protocol):
    """What the handler uses of the engine's `Exchange`: a request to answer here or forward to the app."""

    @property
    def request(self) -> Request: ...

    @property
    def response_started(self) -> bool: ...

    @property
    def task(self) -> asyncio.Task[None]: ...

    async def respond(
        self, status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b""
    ) -> None: ...

    async def forward(
        self,
        pool: UpstreamPool | H2UpstreamPool,
        headers: Headers,
        *,
        timeouts: ForwardTimeouts,
        response_headers: Iterable[tuple[str, str]] = (),
    ) -> int: ...


class QueueHandler:
    """The engine `Handler` of the main port."""

    __slots__ = (
        "_breaker",
        "_drainer",
        "_h2_pool",
        "_in_flight",
        "_now",
        "_pool",
        "_probe_token",
        "_readiness",
        "_request_log",
        "_stats",
        "_tally",
        "_timeout",
        "_timeouts",
        "_tracer",
    )

    def __init__(
        self,
        *,
        pool: UpstreamPool,
        h2_pool: H2UpstreamPool | None = None,
        breaker: Breaker | None,
        stats: RequestStats,
        metrics: RequestMetrics,
        drainer: Drainer,
        in_flight: InFlight,
        readiness: Readiness,
        timeout: float,
        timeouts: ForwardTimeouts,
        request_log: RequestLog | None = None,
        probe_token: str = "",
        tracer: Tracer | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._h2_pool = h2_pool
        self._breaker = breaker
        self._stats = stats
        self._tally: RequestTally = metrics.tally
        self._drainer = drainer
        self._in_flight = in_flight
        self._readiness = readiness
        self._timeout = timeout
        self._timeouts = timeouts
        self._request_log = request_log
        self._probe_token = probe_token
        self._tracer = tracer
        self._now = now

    async def __call__(self, exchange: ProxiedExchange) -> None:
        """Probes are answered here; everything else is proxied (inline: one coroutine per request)."""
        request = exchange.request
        headers = request.headers
        seen = scan(headers)
        if seen:  # else nothing to answer here or to rewrite: the usual bare request
            # A probe from anything but the platform (without the revision's token, when there is one) is an
            # ordinary request for the app.
            if not self._probe_token or token_matches(self._probe_token, seen.get(header.PROBE_TOKEN)):
                probe = seen.get(header.NETWORK_PROBE)
                if probe == header.PROBE_PROBE:
                    await self._network_probe(exchange, seen.get(header.NETWORK_HASH))
                    return
                user_agent = seen.get(header.USER_AGENT, "")
                if header.is_health_check(user_agent, header.KUBELET_PROBE in seen):
                    agent = user_agent.startswith(header.ACTIVATOR_PROBE_UA)
                    await self._health_check(exchange, probe, agent)
                    return
            proxied = prepare(headers, seen)
        else:
            proxied = False
        upgrade = request.upgrade
        tracer = self._tracer
        span = None if tracer is None else tracer.start(headers, request.method, request.target)
        start = self._now()
        self._drainer.last_request = start
        self._stats.request_in(start, proxied)
        task = exchange.task
        timeout = self._timeout
        if seen:
            # A gRPC call's own deadline, when sooner: the call ends with DEADLINE_EXCEEDED then.
            sooner = header.sooner_grpc_timeout(seen.get(header.GRPC_TIMEOUT), timeout)
            if sooner is not None:
                timeout = sooner
        self._in_flight.add(task, exchange, upgrade, start + timeout)
        status = CLIENT_GONE
        waited = 0.0
        failure: BaseException | None = None
        try:
            try:
                # HTTP/2 in, HTTP/2 to the app (only an h2c revision's requests come over HTTP/2), as
                # Knative's queue-proxy does; HTTP/1.1 otherwise.
                pool = self._h2_pool if request.version == "2" and self._h2_pool is not None else self._pool
                breaker = self._breaker
                if breaker is None:
                    status = await exchange.forward(pool, headers, timeouts=self._timeouts)
                else:
                    if not breaker.try_acquire():  # the uncontended case creates no coroutine
                        queued = self._now()
                        try:
                            await breaker.acquire()
                        finally:
                            waited = self._now() - queued
                    try:
                        status = await exchange.forward(pool, headers, timeouts=self._timeouts)
                    finally:
                        breaker.release()
            except asyncio.CancelledError:
                # A timeout only if the sweeper cancelled the task and nobody else (the client leaving) did.
                if not self._in_flight.expired(task) or task.uncancel() > 0:
                    raise
                failure = RequestTimeout()
            except HANDLED as error:
                failure = error
            if failure is not None:
                # Answered outside the `except` blocks: a compiled coroutine suspended inside one leaves its
                # exception marked as handled for whatever else the loop runs meanwhile (mypyc does not swap
                # it out as CPython does), and the engine's parser errors would then carry it as context.
                status = await self._fail(exchange, failure)
        finally:
            end = self._now()
            self._stats.request_out(end, proxied)
            self._in_flight.discard(task, upgrade)
            self._tally.observe(status, end - start)
            if self._request_log is not None:
                self._request_log.write(
                    method=request.method,
                    target=request.target,
                    status=status,
                    seconds=end - start,
                    client=request.client[0],
                    user_agent=seen.get(header.USER_AGENT, ""),
                    proxied=proxied,
                )
            if span is not None:
                span.finish(status, {QUEUE_WAIT: waited})

    async def _network_probe(self, exchange: ProxiedExchange, probe_hash: str | None) -> None:
        """Knative's network probe: echo `K-Network-Hash` so the prober knows this path reaches us."""
        if not probe_hash:
            await exchange.respond(400, _TEXT, b"a network probe needs a K-Network-Hash header\n")
        else:
            await exchange.respond(200, ((header.NETWORK_HASH, probe_hash), *_TEXT), probe_hash.encode())

    async def _health_check(self, exchange: ProxiedExchange, probe: str | None, activator: bool) -> None:
        """Kubelet's and the activator's probes; the activator's asks whether requests may come now, so its
        answer never rests on an earlier result (`Readiness.check_now`)."""
        if self._drainer.draining:
            await exchange.respond(503, _TEXT, b"shutting down\n")
        elif probe and probe != header.PROBE_QUEUE:
            await exchange.respond(400, _TEXT, f"unexpected probe header value: {probe}\n".encode())
        elif await (self._readiness.check_now() if activator else self._readiness.check()):
            await exchange.respond(200, _TEXT, header.PROBE_QUEUE.encode())
        else:
            await exchange.respond(503, _TEXT, b"the app is not ready\n")

    @staticmethod
    async def _fail(exchange: ProxiedExchange, error: BaseException) -> int:
        """Answer with the mapped status unless the app's response already started (then it was aborted)."""
        response = response_for(error)
        if not exchange.response_started:
            await exchange.respond(response.status, response.headers, response.body)
        return response.status
