"""The ingress: routes each request by Host to a revision, then to the activator or straight to a pod.

Per request: pick a revision by the route's weights; in Proxy mode (the autoscaler's published mode, Proxy
until it publishes one) forward to the activator with `Knative-Serving-Revision`/`-Namespace`; in Serve mode
forward to the ready pod with the fewest requests in flight from this router. A pod that refuses the
connection, or whose app refused it (the queue-proxy's marked 502; nothing reached the app), sends the request
through the activator instead. Readiness is read from the platform's state on every request, so a pod the
platform marks not ready gets no new request from here. Every failure of the router's own is a 502, 503 or
504.

Two ways in, one behaviour, as in the queue-proxy. The usual request (HTTP/1.1, arrived whole, no upgrade,
to an HTTP/1.1 revision or a platform host whose pool has an idle connection, tracing off) is forwarded from
the read that completed it (`fast`, the engine's `FastPath`) and ended from the callback that relays the last
byte of its response. Everything else runs in the engine's handler task (`handle`), and so does what follows a
fast request's failure (a stale pooled connection, a pod whose app refused, an activator that failed): the
same steps the task would have taken after that failure, from a task of the fast path's own.

Compiled with mypyc (setup.py), like the queue-proxy's handler: the task's side takes any exchange that has
what `RoutedExchange` names (HTTP/2 streams too), and no coroutine awaits inside an `except` block.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from controller.reconcile.routetable import RouteTable, normalize_host, url
from serving import header
from serving.http import (
    Exchange,
    H2UpstreamPool,
    Headers,
    Request,
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
)
from serving.http.upstream import Completion, ForwardTimeouts, StaleConnection
from serving.platform import Pod, Revision, RevisionKey, ScalerStatus
from serving.tracer import NAMESPACE, REVISION, UPSTREAM, Tracer

log = logging.getLogger(__name__)

_TEXT = (("content-type", "text/plain; charset=utf-8"),)
_TIMEOUTS: Final = ForwardTimeouts()
"""The router's forwards have no deadline of their own: the activator and the queue-proxy enforce the
revision's."""


@dataclass(slots=True)
class RevisionTraffic:
    """What the router saw of one revision's traffic (for the live view and `serving status`)."""

    requests: int = 0
    """Requests routed to the revision since start."""
    in_flight: int = 0
    via_activator: int = 0
    """Requests in flight through the activator: waiting for a pod or proxied by it."""
    errors: int = 0
    """Requests the router answered with an error of its own (5xx)."""
    direct_fallbacks: int = 0
    """Requests sent straight to a ready pod because the activator was unreachable."""


class RoutedExchange(Protocol):
    """What the router's handler task uses of an exchange: the engine's `Exchange`, an HTTP/2 stream's."""

    note: object

    @property
    def request(self) -> Request: ...

    @property
    def response_started(self) -> bool: ...

    async def respond(
        self, status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b""
    ) -> None: ...

    async def forward(
        self,
        pool: UpstreamPool | H2UpstreamPool,
        headers: Headers,
        *,
        timeouts: ForwardTimeouts = _TIMEOUTS,
        response_headers: Iterable[tuple[str, str]] = (),
        retry_refused: bool = False,
    ) -> int: ...


@dataclass(slots=True)
class _Trip:
    """One request on its way: the exchange, its revision, the headers it is forwarded with, the revision's
    counters, and every address it was sent to (the last is the one that answered, if any did)."""

    ex: RoutedExchange
    key: RevisionKey
    headers: Headers
    traffic: RevisionTraffic
    hops: list[str]


class _Routed(Completion):
    """A request on the router's fast path: told its first forward's end by the engine (the `Completion` of
    `Exchange.forward_now`), and the client's leaving while a task carries on after a failure. `trip` is None
    for a platform host's request, which has no revision."""

    __slots__ = ("address", "again", "ex", "finished", "platform", "pod", "router", "trip")

    def __init__(
        self,
        router: Router,
        ex: Exchange,
        trip: _Trip | None,
        pod: Pod | None,
        address: str,
        platform: UpstreamPool | None = None,
    ) -> None:
        self.router = router
        self.ex = ex
        self.trip = trip
        self.pod = pod
        self.address = address
        """Where the first forward went (the pod's, the activator's or the platform host's)."""
        self.platform = platform
        self.finished = False
        self.again: asyncio.Task[None] | None = None

    def done(self) -> bool:
        return self.finished

    def set_result(self, result: int, /) -> None:
        if not self.finished:
            self.attempt_over()
            self.end()

    def set_exception(self, exception: BaseException, /) -> None:
        if self.finished:
            return
        again = self.again
        if again is not None:
            # The client left while the task carried on: it stops; the request ends here.
            again.cancel()
            self.end()
            return
        self.attempt_over()
        if isinstance(exception, asyncio.CancelledError):
            self.end()  # the client left; nothing can be answered
            return
        self.again = self.ex.connection.loop.create_task(self.router._again(self, exception))

    def attempt_over(self) -> None:
        """The first forward ended: what it counted while in flight is released."""
        trip = self.trip
        if trip is not None:
            if self.pod is None:
                trip.traffic.via_activator -= 1
            else:
                self.router._in_flight[self.address] -= 1

    def end(self) -> None:
        """The request's end, whichever way it ended."""
        self.finished = True
        trip = self.trip
        try:
            if trip is not None:
                trip.traffic.in_flight -= 1
        finally:
            self.ex.finished()


class RoutingState(Protocol):
    """What the router reads of the platform: revisions with their pods, and each one's routing mode."""

    def revision(self, key: RevisionKey) -> Revision | None: ...
    def revisions(self) -> list[Revision]: ...
    def status(self, key: RevisionKey) -> ScalerStatus | None: ...
    def changes(self) -> AsyncIterator[object]: ...


class Router:
    def __init__(
        self,
        store: RoutingState,
        activator_port: int,
        *,
        ingress_port: int,
        rng: random.Random | None = None,
        trusted_proxies: TrustedProxies = (),
        activator_host: str = "127.0.0.1",
        where: str = "this `serving up`",
        tracer: Tracer | None = None,
    ) -> None:
        self._store = store
        self._tracer = tracer
        self._trusted = trusted_proxies
        self._where = where
        self._activator = UpstreamPool(activator_host, activator_port)
        self._activator_h2 = H2UpstreamPool(activator_host, activator_port)
        self._pods: dict[str, UpstreamPool | H2UpstreamPool] = {}
        self._in_flight: dict[str, int] = {}
        self._rng = rng or random.Random()
        self._ingress_port = ingress_port
        self.table = RouteTable()
        self.traffic: dict[RevisionKey, RevisionTraffic] = {}
        self._platform_hosts: dict[str, UpstreamPool] = {}

    def set_table(self, table: RouteTable) -> None:
        self.table = table

    def set_platform_hosts(self, hosts: dict[str, tuple[str, int]]) -> None:
        """Hosts the platform's own services answer (the Broker ingress, webhook sources): each Host is sent
        to its address as it is, with no revision, activator or autoscaling in between."""
        self._platform_hosts = {normalize_host(h): UpstreamPool(*address) for h, address in hosts.items()}

    def traffic_of(self, key: RevisionKey) -> RevisionTraffic:
        found = self.traffic.get(key)
        if found is None:
            found = self.traffic[key] = RevisionTraffic()
        return found

    def _platform_for(self, host: str | None) -> UpstreamPool | None:
        """The pool of a platform host (a Broker's ingress) that no Service route claims, if `host` is one."""
        if not self._platform_hosts or not host:
            return None
        return self._platform_hosts.get(normalize_host(host))

    async def handle(self, ex: RoutedExchange) -> None:
        request = ex.request
        key = ex.note
        if not isinstance(key, RevisionKey):  # else the fast path picked it, and left the request here
            route = self.table.lookup(request.host)
            if route is None:
                platform = self._platform_for(request.host)
                if platform is not None:
                    await self._to_platform(ex, platform)
                else:
                    await self._unknown_host(ex, request.host)
                return
            key = route.pick(self._rng)
            if key is None:
                await ex.respond(503, _TEXT, f"{route.host} has no revision with traffic yet\n".encode())
                return
        traffic = self.traffic_of(key)
        traffic.requests += 1
        traffic.in_flight += 1
        status = 0
        span = None
        hops: list[str] = []
        try:
            bug: Exception | None = None
            try:
                headers = request.headers.copy()
                trip = _Trip(ex, key, headers, traffic, hops)
                sanitize(headers, request.client[0], self._trusted)
                if self._tracer is not None:
                    span = self._tracer.start(headers, request.method, request.target, request.client[0])
                status = await self._route(trip, self._pod_for(key))
            except Exception as error:
                # The request's boundary: a bug must not reach the client as the engine's 500 (a proxy's
                # failure is a bad gateway); it is logged with its traceback, and answered after this block.
                if ex.response_started:
                    raise
                bug = error
            if bug is not None:
                status = await self._failed_unexpectedly(ex, key, traffic, bug)
        finally:
            traffic.in_flight -= 1
            if span is not None:
                upstream = hops[-1] if hops else ""  # the last hop tried: the one that answered, if any did
                span.finish(status or 499, {REVISION: key.name, NAMESPACE: key.namespace, UPSTREAM: upstream})

    async def _route(self, trip: _Trip, pod: Pod | None) -> int:
        """To `pod` (a ready pod in Serve mode), or through the activator when there is none or it refused."""
        if pod is not None:
            try:
                return await self._to_pod(trip, pod)
            except UpstreamConnectError as exc:
                log.info("pod %s refused a connection (%s); sending through the activator", pod.name, exc)
        return await self._via_activator(trip, retry=pod is not None)

    async def _via_activator(self, trip: _Trip, *, retry: bool) -> int:
        trip.traffic.via_activator += 1
        try:
            return await self._to_activator(trip, retry=retry)
        finally:
            trip.traffic.via_activator -= 1

    async def _failed_unexpectedly(
        self, ex: RoutedExchange, key: RevisionKey | None, traffic: RevisionTraffic | None, bug: Exception
    ) -> int:
        request = ex.request
        where = "" if key is None else f" to {key}"
        log.error("routing %s %s%s failed", request.method, request.target, where, exc_info=bug)
        if traffic is not None:
            traffic.errors += 1
        await ex.respond(502, _TEXT, b"the router failed the request\n")
        return 502

    # -- the fast path ------------------------------------------------------------------------------------

    def fast(self, ex: Exchange) -> bool:
        """The engine's `FastPath`: forward a plain request now, from the read that completed it, on an idle
        connection; False (nothing done but the pick of a revision, kept in `ex.note`) leaves it to `handle`
        in the handler task."""
        if self._tracer is not None or not ex.forwardable_now:
            return False
        request = ex.request
        route = self.table.lookup(request.host)
        if route is None:
            platform = self._platform_for(request.host)
            return False if platform is None else self._to_platform_now(ex, platform)
        key = route.pick(self._rng)
        if key is None:
            return False
        # From here on the task routes to this revision too: one pick per request, so the split holds.
        ex.note = key
        store = self._store
        revision = store.revision(key)
        if revision is None or revision.protocol == "h2c":
            return False  # the task translates to HTTP/2
        status = store.status(key)
        pod = None if status is None or status.mode != "Serve" else self._ready_in(revision)
        if pod is None:
            address = self._activator.address
            pool = self._activator
        else:
            address = pod.address
            found = self._pods.get(address)
            if not isinstance(found, UpstreamPool):
                return False  # no pool yet: the task makes it, and connects
            pool = found
        conn = pool.take_idle()
        if conn is None:
            return False  # a new connection is awaited in the task
        headers = request.headers.copy()
        traffic = self.traffic_of(key)
        trip = _Trip(ex, key, headers, traffic, [address])
        routed = _Routed(self, ex, trip, pod, address)
        try:
            sanitize(headers, request.client[0], self._trusted)
            if pod is None:
                headers.set(header.REVISION, key.name)
                headers.set(header.NAMESPACE, key.namespace)
            ex.forward_now(conn, headers, _TIMEOUTS, routed, retry_refused=pod is not None)
        except BaseException:
            # A bug: the engine answers 500. Nothing is left taken.
            ex.abandon()
            conn.close()
            raise
        # Counted once the request is on its way: its end cannot come before this callback returns.
        traffic.requests += 1
        traffic.in_flight += 1
        if pod is None:
            traffic.via_activator += 1
        else:
            in_flight = self._in_flight
            in_flight[address] = in_flight.get(address, 0) + 1
        return True

    def _to_platform_now(self, ex: Exchange, upstream: UpstreamPool) -> bool:
        conn = upstream.take_idle()
        if conn is None:
            return False
        headers = ex.request.headers.copy()
        try:
            sanitize(headers, ex.request.client[0], self._trusted)
            routed = _Routed(self, ex, None, None, upstream.address, upstream)
            ex.forward_now(conn, headers, _TIMEOUTS, routed, retry_refused=True)
        except BaseException:
            ex.abandon()
            conn.close()
            raise
        return True

    async def _again(self, routed: _Routed, error: BaseException) -> None:
        """What follows a fast request's failure (in a task of its own): the steps `handle` takes after the
        same failure."""
        ex = routed.ex
        trip = routed.trip
        if not ex.response_started and not ex.has_body:
            ex.rewind()  # as `forward` does after a failure: whether to send it again is decided below
        bug: Exception | None = None
        try:
            if trip is None:
                assert routed.platform is not None
                await self._platform_again(ex, routed.platform, error)
            elif routed.pod is not None:
                await self._pod_again(trip, routed.pod, error)
            else:
                await self._activator_again(trip, error)
        except asyncio.CancelledError:
            return  # the client left: `_Routed` ended the request
        except Exception as failure:
            # The request's boundary, as in `handle`; an upstream's failure after the response started is
            # the engine's to end (it aborts the client connection).
            if ex.response_started:
                log.debug("routing failed after the response started", exc_info=True)
            else:
                bug = failure
        if bug is not None:
            key = None if trip is None else trip.key
            await self._failed_unexpectedly(ex, key, None if trip is None else trip.traffic, bug)
        if not routed.finished:
            routed.end()

    async def _pod_again(self, trip: _Trip, pod: Pod, error: BaseException) -> int:
        if isinstance(error, StaleConnection):
            return await self._route(trip, pod)  # on a fresh connection, as `forward` retries
        if isinstance(error, UpstreamConnectError):
            log.info("pod %s refused a connection (%s); sending through the activator", pod.name, error)
            return await self._via_activator(trip, retry=True)
        if isinstance(error, UpstreamError):
            return await self._pod_failed(trip, pod, error)
        raise error

    async def _activator_again(self, trip: _Trip, error: BaseException) -> int:
        if isinstance(error, StaleConnection):
            return await self._via_activator(trip, retry=False)
        if isinstance(error, (UpstreamError, UpstreamConnectError)):
            trip.traffic.via_activator += 1
            try:
                return await self._activator_failed(trip, error, retry=False)
            finally:
                trip.traffic.via_activator -= 1
        raise error

    async def _platform_again(self, ex: Exchange, upstream: UpstreamPool, error: BaseException) -> None:
        if isinstance(error, StaleConnection):
            await self._to_platform(ex, upstream)
        elif isinstance(error, (UpstreamError, UpstreamConnectError)):
            await self._platform_failed(ex, upstream, error)
        else:
            raise error

    def _pod_for(self, key: RevisionKey) -> Pod | None:
        """A ready pod in Serve mode (fewest in flight, ties broken at random); None means the activator."""
        status = self._store.status(key)
        if status is None or status.mode != "Serve":
            return None
        return self._ready_pod(key)

    def _ready_pod(self, key: RevisionKey) -> Pod | None:
        """A ready pod of the revision whatever its mode (fewest in flight, ties broken at random)."""
        revision = self._store.revision(key)
        return None if revision is None else self._ready_in(revision)

    def _ready_in(self, revision: Revision) -> Pod | None:
        ready = [p for p in revision.pods if p.ready]
        if len(ready) < 2:
            return ready[0] if ready else None
        self._rng.shuffle(ready)
        return min(ready, key=lambda p: self._in_flight.get(p.address, 0))

    def _h2c(self, key: RevisionKey) -> bool:
        revision = self._store.revision(key)
        return revision is not None and revision.protocol == "h2c"

    def _pool_for(self, key: RevisionKey, pod: Pod) -> UpstreamPool | H2UpstreamPool:
        """HTTP/2 to an h2c revision's queue-proxies (HTTP/1.1 clients are translated), else HTTP/1.1 (an
        HTTP/2 client's requests are translated)."""
        if self._h2c(key):
            return H2UpstreamPool(pod.host, pod.port)
        return UpstreamPool(pod.host, pod.port)

    async def _to_pod(self, trip: _Trip, pod: Pod) -> int:
        """Forward to the pod; the status the client got."""
        ex, key, headers = trip.ex, trip.key, trip.headers
        address = pod.address
        trip.hops.append(address)
        pool = self._pods.get(address)
        if pool is None:
            pool = self._pods[address] = self._pool_for(key, pod)
        self._in_flight[address] = self._in_flight.get(address, 0) + 1
        failed: UpstreamError
        try:
            return await ex.forward(pool, headers, retry_refused=True)
        except UpstreamError as exc:
            failed = exc
        finally:
            self._in_flight[address] -= 1
        return await self._pod_failed(trip, pod, failed)

    async def _pod_failed(self, trip: _Trip, pod: Pod, exc: UpstreamError) -> int:
        if exc.response_started or trip.ex.response_started:
            raise exc
        trip.traffic.errors += 1
        await trip.ex.respond(502, _TEXT, f"pod {pod.name} failed the request: {exc}\n".encode())
        return 502

    async def _to_activator(self, trip: _Trip, *, retry: bool) -> int:
        """Forward through the activator (`retry`: a pod refused this exchange first); the client's status."""
        ex, key, headers = trip.ex, trip.key, trip.headers
        trip.hops.append(self._activator.address)
        headers.set(header.REVISION, key.name)
        headers.set(header.NAMESPACE, key.namespace)
        failed: UpstreamConnectError | UpstreamError | None = None
        try:
            return await ex.forward(self._activator_h2 if self._h2c(key) else self._activator, headers)
        except RuntimeError as exc:
            # After a pod refused: the engine forwards an exchange again only while nothing of it was sent
            # (a request body already streamed to the pod cannot be sent to the activator).
            if not retry or ex.response_started:
                raise
            reused = str(exc)
        except (UpstreamConnectError, UpstreamError) as upstream_failed:
            failed = upstream_failed
        if failed is not None:
            return await self._activator_failed(trip, failed, retry=retry)
        trip.traffic.errors += 1
        await ex.respond(502, _TEXT, f"the request cannot be sent again: {reused}\n".encode())
        return 502

    async def _activator_failed(
        self, trip: _Trip, exc: UpstreamConnectError | UpstreamError, *, retry: bool
    ) -> int:
        """The activator could not take the request (`retry`: a pod refused it first); the client's status."""
        ex, traffic = trip.ex, trip.traffic
        if isinstance(exc, UpstreamConnectError):
            # Nothing was sent: with the activator down (restarting), a revision that has a ready pod is
            # served by it directly; its queue-proxy still bounds the pod's concurrency.
            failure: Exception | int = exc
            if not retry:
                failure = await self._around_the_activator(trip, exc)
            if isinstance(failure, int):
                return failure
            traffic.errors += 1
            body = (
                f"the activator at {self._activator.address} is not reachable ({failure}); "
                "it is restarted automatically, retry in a moment\n"
            )
            await ex.respond(503, (*_TEXT, (header.RETRY_AFTER, "1")), body.encode())
            return 503
        if exc.response_started or ex.response_started:
            raise exc
        # The activator died (or hung up) before answering: an idempotent request without a body goes to a
        # ready pod directly, as a proxy retries on its next upstream.
        failure = exc
        if not retry and ex.request.method in _IDEMPOTENT:
            failure = await self._around_the_activator(trip, exc)
        if isinstance(failure, int):
            return failure
        traffic.errors += 1
        await ex.respond(502, _TEXT, f"the activator failed the request: {failure}\n".encode())
        return 502

    async def _around_the_activator(self, trip: _Trip, why: Exception) -> Exception | int:
        """Send a request the activator could not take to a ready pod of its revision; the status the client
        got when that pod answered, else what failed (no ready pod: `why`)."""
        pod = self._ready_pod(trip.key)
        if pod is None:
            return why
        log.warning("the activator failed (%s); sending straight to pod %s", why, pod.name)
        trip.headers.remove(header.REVISION)
        trip.headers.remove(header.NAMESPACE)
        trip.traffic.direct_fallbacks += 1
        try:
            return await self._to_pod(trip, pod)
        except (UpstreamConnectError, RuntimeError) as again:
            if trip.ex.response_started:
                raise
            return again

    async def _to_platform(self, ex: RoutedExchange, upstream: UpstreamPool) -> None:
        headers = ex.request.headers.copy()
        sanitize(headers, ex.request.client[0], self._trusted)
        failed: UpstreamError | UpstreamConnectError
        try:
            await ex.forward(upstream, headers, retry_refused=True)
            return
        except (UpstreamError, UpstreamConnectError) as exc:
            failed = exc
        await self._platform_failed(ex, upstream, failed)

    async def _platform_failed(
        self, ex: RoutedExchange, upstream: UpstreamPool, exc: UpstreamError | UpstreamConnectError
    ) -> None:
        if (isinstance(exc, UpstreamError) and exc.response_started) or ex.response_started:
            raise exc
        body = f"{ex.request.host} at {upstream.address} is not reachable ({exc}); retry in a moment\n"
        await ex.respond(503, (*_TEXT, (header.RETRY_AFTER, "1")), body.encode())

    async def _unknown_host(self, ex: RoutedExchange, host: str | None) -> None:
        known = self.table.hosts()
        lines = [f"no Service answers to Host {host!r} on {self._where}.", ""]
        if known:
            lines.append("Known hosts:")
            lines += [f"  {url(h, self._ingress_port)}" for h in known]
        else:
            lines.append("No Service is running yet.")
        await ex.respond(404, _TEXT, ("\n".join(lines) + "\n").encode())

    async def forget_pods(self, live: Iterable[str]) -> None:
        """Close the pools of pods that are gone (and idle in this router)."""
        keep = set(live)
        for address in [a for a in self._pods if a not in keep and not self._in_flight.get(a)]:
            pool = self._pods.pop(address)
            self._in_flight.pop(address, None)
            await pool.close()

    async def run(self) -> None:
        """Follow the store to drop connection pools of removed pods; runs until cancelled."""
        async for _ in self._store.changes():
            await self.forget_pods(p.address for r in self._store.revisions() for p in r.pods)

    async def close(self) -> None:
        for pool in self._platform_hosts.values():
            await pool.close()
        await self.forget_pods(())
        await self._activator.close()
        await self._activator_h2.close()


# Headers only the platform may set (the activator's and queue-proxy's hop headers, probes, routing): from a
# client they would inject a Host into the app, hide load from the autoscaler or pick a revision.
_PLATFORM_ONLY: Final = frozenset(
    {
        header.ORIGINAL_HOST,
        header.ORIGINAL_USER_AGENT,
        header.PROXY_REQUEST,
        header.KUBELET_PROBE,
        header.APP_REFUSED,
    }
)
_PLATFORM_ONLY_PREFIXES: Final = ("knative-serving-", "k-network-")
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""RFC 9110's idempotent methods: a request the activator may have passed on can be sent again."""
_FORWARDING: Final = frozenset(
    {header.X_FORWARDED_FOR, header.X_FORWARDED_PROTO, header.X_FORWARDED_HOST, header.FORWARDED}
)
_PLATFORM_ONLY_AND_FORWARDED_FOR: Final = _PLATFORM_ONLY | {header.X_FORWARDED_FOR}
_PLATFORM_ONLY_AND_FORWARDING: Final = _PLATFORM_ONLY | _FORWARDING

TrustedProxies = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


def is_trusted(client_ip: str, trusted: TrustedProxies) -> bool:
    if not trusted:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(address in network for network in trusted)


def sanitize(headers: Headers, client_ip: str, trusted: TrustedProxies = ()) -> None:
    """Make a client's headers fit to route: drop what only the platform may say, and keep the client's
    `X-Forwarded-*`/`Forwarded` only when it is a trusted proxy (then append it to `X-Forwarded-For`, as
    Knative's ingresses do); otherwise they are replaced by what this ingress saw, as Envoy does with no
    trusted hops. A probe-like User-Agent (`kube-probe/...`) travels as `K-Original-User-Agent`, so neither
    the activator nor the queue-proxy answers it as a health check; the queue-proxy gives it back to the
    app."""
    trusting = is_trusted(client_ip, trusted)
    # One pass: what only the platform may say, `X-Forwarded-For` (appended to, or replaced, below) and, from
    # a client that is no trusted proxy, the other forwarding headers.
    dropped = headers.drop(
        _PLATFORM_ONLY_AND_FORWARDED_FOR if trusting else _PLATFORM_ONLY_AND_FORWARDING,
        _PLATFORM_ONLY_PREFIXES,
    )
    previous = next((v for n, v in dropped if n == header.X_FORWARDED_FOR), None) if trusting else None
    headers.add(header.X_FORWARDED_FOR, f"{previous}, {client_ip}" if previous else client_ip)
    if header.X_FORWARDED_PROTO not in headers:
        headers.add(header.X_FORWARDED_PROTO, "http")
    user_agent = headers.get(header.USER_AGENT)
    if user_agent is not None and header.is_probe_agent(user_agent):
        headers.remove(header.USER_AGENT)
        headers.set(header.ORIGINAL_USER_AGENT, user_agent)
