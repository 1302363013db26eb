"""`serving activator`: wires config, the revision registry, the stat link and both servers, then runs.

Shutdown on SIGTERM/SIGINT: readiness fails at once while traffic is still served for `DRAIN_TIMEOUT`;
then the main port stops accepting, in-flight and queued requests finish (bounded by the longest revision
timeout), and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import sys

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
from serving import logformat, process
from serving.clock import MonotonicClock
from serving.config import ConfigError
from serving.http import drain, serve
from serving.platformclient import HttpPlatform

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


async def _run_lifecycle(
    config: ActivatorConfig,
    terminating: asyncio.Event,
    health: Health,
    server: asyncio.Server,
    registry: Registry,
    background: list[asyncio.Task[None]],
) -> None:
    await terminating.wait()
    health.draining = True
    log.info("terminating: readiness fails now; serving for %.1fs more", config.drain_timeout)
    await asyncio.sleep(config.drain_timeout)
    log.info("closing the listener; finishing in-flight and queued requests")
    await drain(server, registry.max_timeout() + DRAIN_GRACE)
    log.info("drained; exiting")
    for task in background:
        task.cancel()


async def run(config: ActivatorConfig) -> int:
    terminating = process.termination_event()

    async with aiohttp.ClientSession() as session:
        prometheus = CollectorRegistry()
        link = AutoscalerLink(config.autoscaler_url, session)
        reporter = StatReporter(pod_name=config.pod_name, clock=MonotonicClock(), send=link.send)
        metrics = ActivatorMetrics(prometheus, lambda: registry.occupancy())
        registry = Registry(
            probe=HttpProbe(session),
            metrics=metrics,
            queue_depth=config.queue_depth,
            index=config.index,
            count=config.count,
        )
        health = Health(autoscaler_connected=lambda: link.connected, synced=lambda: registry.synced)
        handler = ActivatorHandler(registry, reporter, health.ready)
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
            async with asyncio.TaskGroup() as group:
                background = [
                    group.create_task(registry.run(HttpPlatform(config.platform_url, session))),
                    group.create_task(link.run()),
                    group.create_task(reporter.run()),
                ]
                group.create_task(_run_lifecycle(config, terminating, health, server, registry, background))
        finally:
            await registry.close()
            await admin.cleanup()
    return 0


def main(argv: list[str]) -> int:
    if argv:
        print("usage: serving activator  (configured by environment variables; see docs/activator.md)")
        return 0 if argv[0] in ("-h", "--help") else 2
    try:
        config = load_config(os.environ)
    except ConfigError as exc:
        print(f"serving activator: {exc}", file=sys.stderr)
        return 1
    logformat.configure(config.log_format, config.log_level)
    _raise_file_limit()
    try:
        return uvloop.run(run(config))
    except OSError as exc:
        log.error("activator failed: %s", exc)
        return 1
    except BaseExceptionGroup as group:
        log.error("activator failed: %s", "; ".join(repr(e) for e in group.exceptions))
        return 1
