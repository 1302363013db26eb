"""`serving queue-proxy`: wires config, the request handler and the side servers, then runs until drained.

Shutdown order on SIGTERM/SIGINT: health checks fail at once; requests keep being served until the quiet
period passes with none; the main port stops accepting; in-flight requests finish; upgraded connections
get `DRAIN_WEBSOCKET_TIMEOUT`; the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass

import uvloop
from prometheus_client import CollectorRegistry

from queueproxy.config import Config, load_config
from queueproxy.drain import Drainer, admin_app
from queueproxy.handler import QueueHandler
from queueproxy.inflight import InFlight
from queueproxy.metrics import RequestMetrics, metrics_app
from queueproxy.readiness import Readiness
from queueproxy.requestlog import RequestLog
from queueproxy.site import run_site
from queueproxy.stats import StatReporter, run_reporter, stats_app
from serving import logformat, process
from serving.breaker import Breaker
from serving.concurrency import RequestStats
from serving.config import ConfigError
from serving.http import ForwardTimeouts, UpstreamPool, drain, serve

logger = logging.getLogger("queueproxy")

APP_HOST = "127.0.0.1"
"""The app runs beside the queue-proxy in the same pod (network namespace)."""


async def _run_lifecycle(
    config: Config,
    terminating: asyncio.Event,
    drainer: Drainer,
    in_flight: InFlight,
    server: asyncio.Server,
    others: list[asyncio.Task[None]],
) -> None:
    """Wait for SIGTERM, drain, stop the main server, then stop every other long-lived task."""
    await terminating.wait()
    logger.info("SIGTERM: draining")
    await drainer.wait()
    settings = config.drain
    engine_drain = asyncio.create_task(drain(server, config.proxy.timeout + settings.websocket_timeout))
    await in_flight.wait_plain()
    await in_flight.close_upgrades(settings.websocket_timeout)
    await engine_drain
    logger.info("drained; exiting")
    for task in others:
        task.cancel()


@dataclass(frozen=True, slots=True)
class _Parts:
    """The long-lived objects of one queue-proxy process."""

    registry: CollectorRegistry
    drainer: Drainer
    in_flight: InFlight
    readiness: Readiness
    pool: UpstreamPool
    reporter: StatReporter
    handler: QueueHandler


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
    readiness = Readiness(proxy.readiness_probe, proxy.user_port)
    pool = UpstreamPool(APP_HOST, proxy.user_port)
    handler = QueueHandler(
        pool=pool,
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
    )
    reporter = StatReporter(stats, identity.pod)
    return _Parts(registry, drainer, in_flight, readiness, pool, reporter, handler)


async def _run(config: Config) -> None:
    ports, parts = config.ports, _build(config)
    terminating = process.termination_event()
    try:
        server = await serve(parts.handler, ports.bind_address, ports.serving)
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
    try:
        async with asyncio.TaskGroup() as group:
            others = [
                group.create_task(
                    run_site("admin", admin_app(parts.drainer, terminating), host, ports.admin)
                ),
                group.create_task(run_site("stats", stats_app(parts.reporter), host, ports.stats)),
                group.create_task(run_site("metrics", metrics_app(parts.registry), host, ports.metrics)),
                group.create_task(run_reporter(parts.reporter)),
                group.create_task(parts.in_flight.run_sweeper()),
            ]
            group.create_task(
                _run_lifecycle(config, terminating, parts.drainer, parts.in_flight, server, others)
            )
    finally:
        server.close()
        await parts.readiness.close()
        await parts.pool.close()


def _reason(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_reason(inner) for inner in error.exceptions)
    return str(error) or type(error).__name__


def main(argv: list[str]) -> int:
    if argv:
        print("usage: serving queue-proxy  (configured by environment variables only)", file=sys.stderr)
        return 2
    try:
        config = load_config(os.environ)
    except ConfigError as exc:
        print(f"serving queue-proxy: {exc}", file=sys.stderr)
        return 1
    logformat.configure(config.log.log_format, config.log.log_level)
    try:
        uvloop.run(_run(config))
    except Exception as exc:  # the process boundary: one line, non-zero exit
        logger.error("queue-proxy stopped: %s", _reason(exc))
        return 1
    return 0
