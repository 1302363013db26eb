"""`serving queue-proxy`: wires config, the request handler and the side servers, then runs until drained.

Shutdown order on SIGTERM/SIGINT: health checks fail at once; requests keep being served until the quiet
period passes with none; the main port stops accepting; in-flight requests finish; upgraded connections
get `DRAIN_WEBSOCKET_TIMEOUT`; the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import uvloop
from prometheus_client import CollectorRegistry

from queueproxy.config import Config, load_config
from queueproxy.drain import Drainer, admin_routes
from queueproxy.handler import QueueHandler
from queueproxy.inflight import InFlight
from queueproxy.metrics import RequestMetrics, metrics_routes
from queueproxy.readiness import Readiness
from queueproxy.requestlog import RequestLog
from queueproxy.stats import StatReporter, run_reporter, stats_routes
from serving import lifecycle
from serving.breaker import Breaker
from serving.concurrency import RequestStats
from serving.http import ForwardTimeouts, Server, UpstreamPool, serve
from serving.http.endpoints import run_endpoints
from serving.tracer import NAMESPACE, REVISION, UPSTREAM, Tracer, start_tracing

if TYPE_CHECKING:
    from serving.http import H2UpstreamPool

logger = logging.getLogger("queueproxy")

APP_HOST = "127.0.0.1"
"""The app runs beside the queue-proxy in the same pod (network namespace)."""


async def _drain(config: Config, drainer: Drainer, in_flight: InFlight, server: Server) -> None:
    """The drain after SIGTERM, in the order documented above; the side servers keep running meanwhile."""
    logger.info("SIGTERM: draining")
    await drainer.wait()
    settings = config.drain
    engine_drain = asyncio.create_task(server.drain(config.proxy.timeout + settings.websocket_timeout))
    await in_flight.wait_plain()
    await in_flight.close_upgrades(settings.websocket_timeout)
    await engine_drain
    logger.info("drained; exiting")


@dataclass(frozen=True, slots=True)
class _Parts:
    """The long-lived objects of one queue-proxy process."""

    registry: CollectorRegistry
    drainer: Drainer
    in_flight: InFlight
    readiness: Readiness
    pool: UpstreamPool
    h2_pool: H2UpstreamPool | None
    """HTTP/2 to the app, for requests that arrive over HTTP/2; None for an HTTP/1.1 app."""
    reporter: StatReporter
    handler: QueueHandler
    tracer: Tracer | None


def _h2_pool(port: int) -> H2UpstreamPool:
    from serving.http import H2UpstreamPool

    return H2UpstreamPool(APP_HOST, port)


def _build(config: Config) -> _Parts:
    identity, proxy = config.identity, config.proxy
    stats = RequestStats(time.monotonic())
    breaker = (
        Breaker(capacity=proxy.container_concurrency, queue_depth=proxy.queue_depth)
        if proxy.container_concurrency > 0
        else None
    )
    registry = CollectorRegistry()
    metrics = RequestMetrics(
        registry,
        identity,
        queue_depth=(lambda: breaker.waiting) if breaker is not None else (lambda: 0),
        in_flight=lambda: stats.concurrency,
    )
    drainer = Drainer(config.drain.quiet_period)
    in_flight = InFlight()
    readiness = Readiness(proxy.readiness_probe, proxy.user_port, http2=proxy.user_protocol == "h2c")
    pool = UpstreamPool(APP_HOST, proxy.user_port)
    # HTTP/2 to the app only when it speaks it (or when the platform does not say: Knative's rule, the
    # request's protocol); an HTTP/1.1 app's queue-proxy never loads the HTTP/2 side unless a client uses it.
    h2_pool = None if proxy.user_protocol == "http1" else _h2_pool(proxy.user_port)
    tracer = start_tracing(
        config.tracing,
        "queue-proxy",
        {NAMESPACE: identity.namespace, REVISION: identity.revision, UPSTREAM: pool.address},
    )
    handler = QueueHandler(
        pool=pool,
        h2_pool=h2_pool,
        breaker=breaker,
        stats=stats,
        metrics=metrics,
        drainer=drainer,
        in_flight=in_flight,
        readiness=readiness,
        timeout=proxy.timeout,
        timeouts=ForwardTimeouts(
            response_start=proxy.response_start_timeout or None, idle=proxy.idle_timeout or None
        ),
        request_log=RequestLog(identity.revision, identity.pod) if config.log.request_log else None,
        probe_token=proxy.probe_token,
        tracer=tracer,
    )
    reporter = StatReporter(stats, identity.pod)
    return _Parts(registry, drainer, in_flight, readiness, pool, h2_pool, reporter, handler, tracer)


async def run(config: Config, terminating: asyncio.Event) -> None:
    ports, parts = config.ports, _build(config)
    try:
        server = await serve(parts.handler, ports.bind_address, ports.serving, fast=parts.handler.fast)
    except OSError as exc:
        raise OSError(
            exc.errno, f"main server cannot listen on port {ports.serving}: {exc.strerror}"
        ) from None
    logger.info(
        "queue-proxy for %s/%s on :%d -> %s:%d (containerConcurrency %d)",
        config.identity.namespace,
        config.identity.revision,
        ports.serving,
        APP_HOST,
        config.proxy.user_port,
        config.proxy.container_concurrency,
    )
    host = ports.bind_address
    admin = admin_routes(parts.drainer, terminating, parts.in_flight)
    try:
        await lifecycle.supervise(
            terminating,
            [
                run_endpoints("admin", admin, host, ports.admin),
                run_endpoints("stats", stats_routes(parts.reporter), host, ports.stats),
                run_endpoints("metrics", metrics_routes(parts.registry), host, ports.metrics),
                run_reporter(parts.reporter),
                parts.in_flight.run_sweeper(),
            ],
            lambda: _drain(config, parts.drainer, parts.in_flight, server),
        )
    finally:
        server.close()
        await parts.readiness.close()
        await parts.pool.close()
        if parts.h2_pool is not None:
            await parts.h2_pool.close()
        if parts.tracer is not None:
            await asyncio.to_thread(parts.tracer.close)


def main(argv: list[str]) -> int:
    return lifecycle.run_component(
        "queue-proxy",
        argv,
        usage="usage: serving queue-proxy  (configured by environment variables; see docs/queue-proxy.md)",
        load=load_config,
        log=lambda config: config.log,
        main=run,
        loop_factory=uvloop.new_event_loop,
    )
