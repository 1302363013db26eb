"""The activator's request path: identify the revision, wait for capacity, forward to a pod, map errors.

Every failure becomes a status code here and nowhere else: queue full -> 503 with Retry-After; still
waiting (or not answered) when the revision timeout ends -> 504; a pod refusing the connection, or whose app
refused it (the queue-proxy's marked 502) -> the pod leaves rotation and the request goes to another pod or
waits for one (nothing was sent, so it is safe); any other failure before the response started -> 502, never
the engine's 500. A client that goes away cancels the handler task, which leaves the queue at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from activator.registry import Registry
from activator.reporter import StatReporter
from activator.revision import identify
from activator.throttler import QueueFull
from serving import header
from serving.http import (
    Exchange,
    Headers,
    IdleTimeout,
    ResponseStartTimeout,
    UpstreamConnectError,
    UpstreamError,
)
from serving.platform import RevisionKey
from serving.tracer import ACTIVATOR_WAIT, NAMESPACE, REVISION, UPSTREAM, AttributeValue, Span, Tracer

log = logging.getLogger(__name__)

MAX_CONNECT_ATTEMPTS: Final = 5
"""Pods tried for one request when connections are refused (by a queue-proxy, or by its app); each refusal
also takes that pod out of rotation until it passes a probe, so a request whose pods are all down waits in the
queue, and only one that keeps meeting pods failing right after their probe passed gets a 502."""
SYNC_WAIT: Final = 10.0
"""Seconds a request waits for the first revision snapshot after the activator starts before a 404."""
RETRY_AFTER_SECONDS: Final = "1"
"""Advice to clients turned away by a full queue: the queue drains at the pods' pace, so retry soon."""

_TEXT: Final = (("content-type", "text/plain; charset=utf-8"),)
_RETRY: Final = (*_TEXT, (header.RETRY_AFTER, RETRY_AFTER_SECONDS))
_ACTIVATOR_BODY: Final = header.PROBE_ACTIVATOR.encode()
_QUEUE_FULL: Final = b"activator queue full\n"
_OVER_CAPACITY: Final = b"revision at max-scale: over capacity\n"
CLIENT_GONE: Final = 499
"""Traced (never sent) when the client left before its response ended; nginx's convention."""


class ActivatorHandler:
    """The engine handler of the main port. `ready` reports the process's readiness to kubelet probes."""

    __slots__ = ("_loop", "_ready", "_registry", "_reporter", "_tracer")

    def __init__(
        self,
        registry: Registry,
        reporter: StatReporter,
        ready: Callable[[], bool],
        tracer: Tracer | None = None,
    ) -> None:
        self._registry = registry
        self._reporter = reporter
        self._ready = ready
        self._tracer = tracer
        self._loop = asyncio.get_running_loop()

    async def __call__(self, exchange: Exchange) -> None:
        headers = exchange.request.headers
        if await self._answered_locally(exchange, headers):
            return
        key = identify(headers)
        entry = None if key is None else self._registry.get(key)
        if entry is None and key is not None and not self._registry.synced:
            # Just started (or restarted): the platform's revisions have not arrived yet, so "not found"
            # would be a guess; the request waits for them like one held for a pod.
            await self._registry.wait_synced(SYNC_WAIT)
            entry = self._registry.get(key)
        if key is None or entry is None:
            await self._not_found(exchange, key, headers)
            return
        # One coroutine frame per held request, and its headers untouched until it leaves the queue: a
        # revision at zero may hold 10,000 of these.
        load = self._reporter.request_in(key)
        tracer = self._tracer
        span = None if tracer is None else _start_span(tracer, exchange)
        throttler = entry.throttler
        waited = 0.0
        status = 0
        prepared = False
        try:
            # A gRPC call's own deadline, when sooner, bounds its stay here (the wait for a pod included).
            grpc_deadline = header.sooner_grpc_timeout(headers.get(header.GRPC_TIMEOUT), entry.timeout)
            timeout = entry.timeout if grpc_deadline is None else grpc_deadline
            async with asyncio.timeout(timeout) as deadline:
                expires = deadline.when()
                for attempt in range(MAX_CONNECT_ATTEMPTS):
                    tracker = throttler.try_acquire()
                    if tracker is None:
                        started = self._loop.time()
                        try:
                            tracker = await throttler.acquire()
                        finally:
                            waited += self._loop.time() - started
                    try:
                        if not prepared:
                            _prepare(headers, exchange.request.client[0])
                            prepared = True
                            if exchange.request.upgrade:
                                deadline.reschedule(None)  # a websocket lives past the request timeout
                        headers.set(header.HOST, tracker.address)
                        if grpc_deadline is not None and waited and expires is not None:
                            # The call's deadline as the pod sees it: what is left of it after the wait here.
                            left = max(expires - self._loop.time(), 0.001)
                            headers.set(header.GRPC_TIMEOUT, header.grpc_timeout_value(left))
                        timing = (
                            ((header.SERVER_TIMING, f"activator;dur={waited * 1000:.1f}"),) if waited else ()
                        )
                        status = await exchange.forward(
                            entry.pool(tracker.address),
                            headers,
                            timeouts=entry.forward_timeouts,
                            response_headers=timing,
                            retry_refused=True,
                        )
                        return
                    except UpstreamConnectError as exc:
                        # Nothing reached the app: the pod leaves rotation until a probe passes, and the
                        # request goes to another pod or waits in the queue for one.
                        log.warning("%s: pod %s refused a connection (%s)", key, tracker.address, exc)
                        entry.pod_failed(tracker.address)
                        deadline.reschedule(expires)
                    except RuntimeError as exc:
                        if not attempt:
                            raise
                        # The engine forwards an exchange again only while nothing of it was sent: a request
                        # body already streamed to a pod cannot be sent to another one.
                        raise UpstreamError(
                            f"the request cannot be sent again: {exc}", response_started=False
                        ) from exc
                    finally:
                        throttler.release(tracker)
                raise UpstreamError(
                    f"{MAX_CONNECT_ATTEMPTS} pods refused the connection", response_started=False
                )
        except QueueFull:
            status = 503
            body = _OVER_CAPACITY if throttler.saturated else _QUEUE_FULL
            await exchange.respond(503, _RETRY, body)
        except (TimeoutError, ResponseStartTimeout, IdleTimeout):
            if exchange.response_started:
                raise
            status = 504
            await exchange.respond(504, _TEXT, b"activator request timeout\n")
        except UpstreamError as exc:
            if exc.response_started or exchange.response_started:
                raise
            status = 502
            await exchange.respond(502, _TEXT, f"activator: upstream failed: {exc}\n".encode())
        except Exception:
            # The request's boundary: a bug must not reach the client as the engine's 500, since a proxy's
            # failure is a bad gateway; it is logged with its traceback.
            if exchange.response_started:
                raise
            log.exception("%s: request failed unexpectedly", key)
            status = 502
            await exchange.respond(502, _TEXT, b"activator: internal error\n")
        finally:
            self._reporter.request_out(load)
            entry.metrics.wait.observe(waited)
            if status:
                entry.metrics.count(status)
            if span is not None:
                _finish_span(span, key, status, waited, headers.get(header.HOST) if prepared else None)

    async def _answered_locally(self, exchange: Exchange, headers: Headers) -> bool:
        """Probes meant for the activator itself (network probes and kubelet probes)."""
        probe = headers.get(header.NETWORK_PROBE)
        if probe == header.PROBE_ACTIVATOR:
            await exchange.respond(200, _TEXT, _ACTIVATOR_BODY)
            return True
        if probe == header.PROBE_PROBE and header.NETWORK_HASH in headers:
            await exchange.respond(200, _TEXT, (headers.get(header.NETWORK_HASH) or "").encode())
            return True
        if header.KUBELET_PROBE in headers or (headers.get(header.USER_AGENT) or "").startswith(
            header.KUBE_PROBE_UA_PREFIX
        ):
            ready = self._ready()
            await exchange.respond(200 if ready else 503, _TEXT, b"ok\n" if ready else b"not ready\n")
            return True
        return False

    @staticmethod
    async def _not_found(exchange: Exchange, key: RevisionKey | None, headers: Headers) -> None:
        if key is None:
            body = f"no revision for host {headers.get(header.HOST)!r}\n"
        else:
            body = f"revision {key} not found\n"
        await exchange.respond(404, _TEXT, body.encode())


def _prepare(headers: Headers, client: str) -> None:
    """Rewrite the request head for the pod: Host moves to K-Original-Host, the revision headers go, and
    the request is marked as proxied by the activator."""
    original_host = headers.get(header.HOST)
    if header.REVISION in headers:
        headers.remove(header.REVISION)
    if header.NAMESPACE in headers:
        headers.remove(header.NAMESPACE)
    if original_host is not None:
        headers.set(header.ORIGINAL_HOST, original_host)
    headers.set(header.PROXY_REQUEST, header.PROXY_REQUEST_ACTIVATOR)
    forwarded_for = headers.get(header.X_FORWARDED_FOR)
    headers.set(header.X_FORWARDED_FOR, f"{forwarded_for}, {client}" if forwarded_for else client)


def _start_span(tracer: Tracer, exchange: Exchange) -> Span:
    request = exchange.request
    return tracer.start(request.headers, request.method, request.target, request.client[0])


def _finish_span(span: Span, key: RevisionKey, status: int, waited: float, upstream: str | None) -> None:
    """What the activator added to the request: its wait for capacity, and the pod it went to."""
    attributes: dict[str, AttributeValue] = {
        REVISION: key.name,
        NAMESPACE: key.namespace,
        ACTIVATOR_WAIT: waited,
    }
    if upstream is not None:
        attributes[UPSTREAM] = upstream
    span.finish(status or CLIENT_GONE, attributes)
