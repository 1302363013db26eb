"""The queue-proxy's per-request path: answer health checks itself, admit the rest, forward them to the app.

Per proxied request: one scan of the request head, the header rules, stats in/out, the breaker (when
containerConcurrency > 0), an in-flight entry carrying the total deadline, the engine's forward, one metrics
observation.

Two ways in, one behaviour. The usual request (HTTP/1.1, arrived whole, no probe, no upgrade, a free breaker
slot, an idle connection to the app, tracing off) is forwarded from the read that completed it (`fast`, the
engine's `FastPath`), and its end is recorded from the callback that relays the app's last byte: no task is
woken for it, which is most of what a coroutine per request costs. Everything else runs in the engine's
handler task (`__call__`), which may wait: for a breaker slot, a new connection, a probe's readiness check.
"""

from __future__ import annotations

import asyncio
import logging
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
from serving.http import Exchange, ForwardTimeouts, Headers, Request, UpstreamPool
from serving.http.upstream import Completion, StaleConnection
from serving.tally import RequestTally
from serving.tracer import QUEUE_WAIT, Tracer

if TYPE_CHECKING:
    from serving.http import H2UpstreamPool

logger = logging.getLogger(__name__)

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
            if self._is_probe(seen):
                probe = seen.get(header.NETWORK_PROBE)
                if probe == header.PROBE_PROBE:
                    await self._network_probe(exchange, seen.get(header.NETWORK_HASH))
                else:
                    agent = seen.get(header.USER_AGENT, "").startswith(header.ACTIVATOR_PROBE_UA)
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
            self._record(request, status, start, end, seen, proxied)
            if span is not None:
                span.finish(status, {QUEUE_WAIT: waited})

    def _is_probe(self, seen: dict[str, str]) -> bool:
        """Whether the request is a probe answered here: a network probe or a health check, from the platform.
        A probe from anything else (without the revision's token, when there is one) is a request for the
        app."""
        if self._probe_token and not token_matches(self._probe_token, seen.get(header.PROBE_TOKEN)):
            return False
        if seen.get(header.NETWORK_PROBE) == header.PROBE_PROBE:
            return True
        return header.is_health_check(seen.get(header.USER_AGENT, ""), header.KUBELET_PROBE in seen)

    def _record(
        self, request: Request, status: int, start: float, end: float, seen: dict[str, str], proxied: bool
    ) -> None:
        """The request's metrics observation and access-log line."""
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

    # -- the fast path ------------------------------------------------------------------------------------

    def fast(self, exchange: Exchange) -> bool:
        """The engine's `FastPath`: forward a plain request now, from the read that completed it, when nothing
        would make it wait; False (nothing done) leaves it to `__call__` in the handler task."""
        if self._tracer is not None or not exchange.forwardable_now:
            return False
        request = exchange.request
        headers = request.headers
        seen = scan(headers)
        timeout = self._timeout
        if seen:
            if self._is_probe(seen):
                return False
            sooner = header.sooner_grpc_timeout(seen.get(header.GRPC_TIMEOUT), timeout)
            if sooner is not None:
                timeout = sooner
        breaker = self._breaker
        if breaker is not None and not breaker.try_acquire():
            return False  # queued in the task, or refused there
        conn = None
        try:
            conn = self._pool.take_idle()
            if conn is None:
                if breaker is not None:
                    breaker.release()
                return False  # a new connection is awaited in the task
            # The rules rewrite the head in place: only once the request cannot go to the task any more.
            proxied = prepare(headers, seen) if seen else False
            start = self._now()
            forwarded = _Forwarded(self, exchange, seen, proxied, start)
            exchange.forward_now(conn, headers, self._timeouts, forwarded)
        except BaseException:
            # A bug: the engine answers 500. Nothing is left taken.
            exchange.abandon()
            if conn is not None:
                conn.close()
            if breaker is not None:
                breaker.release()
            raise
        # Counted once the request is on its way: its end cannot come before this callback returns.
        self._drainer.last_request = start
        self._stats.request_in(start, proxied)
        self._in_flight.add(forwarded, exchange, False, start + timeout)
        return True

    def _forward_ended(self, forwarded: _Forwarded, status: int) -> None:
        """A fast-path request's end, whichever way it ended: the bookkeeping `__call__` does in `finally`."""
        forwarded.finished = True
        connecting = forwarded.connecting
        if connecting is not None:
            forwarded.connecting = None
            connecting.cancel()
        exchange = forwarded.exchange
        # Run from the engine's callbacks and the deadline sweeper: nothing may escape into them, and the
        # connection must go on to its next request whatever failed here.
        try:
            end = self._now()
            if self._breaker is not None:
                self._breaker.release()
            self._stats.request_out(end, forwarded.proxied)
            self._in_flight.discard(forwarded, False)
            self._record(exchange.request, status, forwarded.start, end, forwarded.seen, forwarded.proxied)
        except Exception:
            logger.exception("recording %s %s failed", exchange.request.method, exchange.request.target)
        finally:
            exchange.finished()

    def _forward_failed(self, forwarded: _Forwarded, error: BaseException) -> None:
        """A fast-path request did not get the app's whole response: answered as `__call__` answers."""
        exchange = forwarded.exchange
        if isinstance(error, asyncio.CancelledError):
            self._forward_ended(forwarded, CLIENT_GONE)  # the client left; nothing can be answered
            return
        if isinstance(error, StaleConnection) and not forwarded.retried:
            # A pooled connection the app had closed; nothing reached it: once more, as `forward` retries.
            forwarded.retried = True
            conn = self._pool.take_idle()
            if conn is not None:
                exchange.forward_now(conn, exchange.request.headers, self._timeouts, forwarded)
            else:
                forwarded.connecting = exchange.connection.loop.create_task(self._reconnect(forwarded))
            return
        if isinstance(error, HANDLED):
            response = response_for(error)
            if not exchange.response_started:
                exchange.respond_now(response.status, response.headers, response.body)
            status = response.status
        else:
            request = exchange.request
            logger.error("forwarding failed: %s %s", request.method, request.target, exc_info=error)
            status = 500
            if not exchange.response_started:
                exchange.respond_now(500, _TEXT, b"internal error\n")
        self._forward_ended(forwarded, status)

    async def _reconnect(self, forwarded: _Forwarded) -> None:
        """A fast-path request's retry after a stale connection, when no other idle one was left."""
        failure: Exception | None = None
        try:
            conn = await self._pool.connect(self._timeouts.connect)
        except Exception as error:  # UpstreamConnectError (a 502), or a bug (a 500): the request ends now
            failure = error
        if forwarded.connecting is not asyncio.current_task():
            if failure is None:
                conn.close()  # the request ended meanwhile (client gone, deadline)
            return
        forwarded.connecting = None
        if failure is not None:
            self._forward_failed(forwarded, failure)
            return
        exchange = forwarded.exchange
        try:
            exchange.forward_now(conn, exchange.request.headers, self._timeouts, forwarded)
        except Exception as error:
            conn.close()
            self._forward_failed(forwarded, error)

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


class _Forwarded(Completion):
    """A request on the fast path while it is forwarded: told its end by the engine (the `Completion` of
    `Exchange.forward_now`), and its in-flight entry, which the deadline sweeper cancels (`InFlight`)."""

    __slots__ = ("connecting", "exchange", "finished", "handler", "proxied", "retried", "seen", "start")

    def __init__(
        self, handler: QueueHandler, exchange: Exchange, seen: dict[str, str], proxied: bool, start: float
    ) -> None:
        self.handler = handler
        self.exchange = exchange
        self.seen = seen
        self.proxied = proxied
        self.start = start
        self.finished = False
        self.retried = False
        self.connecting: asyncio.Task[None] | None = None

    def done(self) -> bool:
        return self.finished

    def set_result(self, result: int, /) -> None:
        if not self.finished:
            self.handler._forward_ended(self, result)

    def set_exception(self, exception: BaseException, /) -> None:
        if not self.finished:
            self.handler._forward_failed(self, exception)

    def cancel(self) -> bool:
        """The request's deadline passed: stop forwarding and answer 504 (if nothing was sent yet)."""
        if self.finished:
            return False
        self.exchange.abandon()
        self.handler._forward_failed(self, RequestTimeout())
        return True
