"""`serving activator`: wires config, the revision registry, the stat link and both servers, then runs.

Shutdown on SIGTERM/SIGINT: readiness fails at once while traffic is still served for `DRAIN_TIMEOUT`;
then the main port stops accepting, in-flight and queued requests finish (bounded by the longest revision
timeout), and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import resource

import aiohttp
import uvloop
from aiohttp import web
from prometheus_client import CollectorRegistry

from activator.admin import Health, admin_app
from activator.config import ActivatorConfig, load_config
from activator.handler import ActivatorHandler
from activator.metrics import ActivatorMetrics
from activator.probe import HttpProbe
from activator.registry import Registry
from activator.reporter import AutoscalerLink, StatReporter
from serving import lifecycle
from serving.clock import MonotonicClock
from serving.http import Server, serve
from serving.kube.connect import connect
from serving.platform import PeerSource
from serving.tracer import start_tracing

log = logging.getLogger("activator")

DRAIN_GRACE = 1.0
"""Seconds added to the longest revision timeout when waiting for requests after the listener closed."""


def _raise_file_limit() -> None:
    """Each held request is an open connection: allow as many as the hard limit permits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)


async def _drain(config: ActivatorConfig, health: Health, server: Server, registry: Registry) -> None:
    """Readiness fails while traffic is still served for `DRAIN_TIMEOUT`, then the listener closes and the
    in-flight and queued requests finish."""
    health.draining = True
    log.info("terminating: readiness fails now; serving for %.1fs more", config.drain_timeout)
    await asyncio.sleep(config.drain_timeout)
    log.info("closing the listener; finishing in-flight and queued requests")
    await server.drain(registry.max_timeout() + DRAIN_GRACE)
    log.info("drained; exiting")


async def run(config: ActivatorConfig, terminating: asyncio.Event) -> None:
    _raise_file_limit()
    tracer = start_tracing(config.tracing, "activator")
    async with aiohttp.ClientSession() as session:
        prometheus = CollectorRegistry()
        link = AutoscalerLink(config.autoscaler_url, session)
        reporter = StatReporter(pod_name=config.pod_name, clock=MonotonicClock(), send=link.send)
        metrics = ActivatorMetrics(prometheus, lambda: registry.occupancy())
        registry = Registry(
            probe=HttpProbe(session, secret=config.probe_secret).for_revision,
            metrics=metrics,
            queue_depth=config.queue_depth,
            queue_per_slot=config.queue_per_slot,
            autoscaler_config=config.autoscaler_config,
            index=config.index,
            count=config.count,
        )
        health = Health(autoscaler_connected=lambda: link.connected, synced=lambda: registry.synced)
        handler = ActivatorHandler(registry, reporter, health.ready, tracer)
        admin = web.AppRunner(admin_app(health, prometheus), access_log=None, shutdown_timeout=1.0)
        await admin.setup()
        try:
            await web.TCPSite(admin, config.bind_address, config.admin_port).start()
            server = await serve(handler, config.bind_address, config.port)
            log.info(
                "activator %s (%d of %d) serving on %s:%d, admin on :%d",
                config.pod_name,
                config.index,
                config.count,
                config.bind_address,
                config.port,
                config.admin_port,
            )
            async with connect(config.platform_url, session) as platform:
                tasks = [registry.run(platform), link.run(), reporter.run()]
                if isinstance(platform, PeerSource) and config.pod_ip:
                    tasks.append(_follow_peers(platform, config, registry))
                await lifecycle.supervise(
                    terminating, tasks, lambda: _drain(config, health, server, registry)
                )
        finally:
            await registry.close()
            await admin.cleanup()
            if tracer is not None:
                await asyncio.to_thread(tracer.close)


async def _follow_peers(platform: PeerSource, config: ActivatorConfig, registry: Registry) -> None:
    async for index, count in platform.peers(config.system_namespace, config.service_name, config.pod_ip):
        registry.set_subset(index, count)


def main(argv: list[str]) -> int:
    return lifecycle.run_component(
        "activator",
        argv,
        usage="usage: serving activator  (configured by environment variables; see docs/activator.md)",
        load=load_config,
        log=lambda config: config,
        main=run,
        loop_factory=uvloop.new_event_loop,
    )
