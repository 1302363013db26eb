"""`serving autoscaler`: wires settings, the platform client, the scraper, the multiscaler and the stat
server, then runs the watch, scrape and decide loops until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

import aiohttp
import uvloop
from aiohttp import web
from prometheus_client import CollectorRegistry

from autoscaler.config import Settings, load_settings
from autoscaler.multiscaler import Multiscaler
from autoscaler.probe import ActivatorProbe, AssumeActivatorInPath, HttpActivatorProbe
from autoscaler.scraper import Scraper
from autoscaler.statclient import StatClient
from autoscaler.statserver import StatServer
from serving import logformat, process
from serving.clock import MonotonicClock
from serving.config import ConfigError
from serving.platformclient import HttpPlatform

log = logging.getLogger("autoscaler")


async def run(settings: Settings) -> None:
    """Run until cancelled or a signal arrives."""
    registry = CollectorRegistry()
    clock = MonotonicClock()
    stop = process.termination_event()
    stat_client = StatClient(timeout=settings.scrape_timeout)
    async with aiohttp.ClientSession() as platform_session:
        platform = HttpPlatform(settings.platform_url, platform_session)
        probe: ActivatorProbe = AssumeActivatorInPath()
        if settings.activator_url:
            probe = HttpActivatorProbe(platform_session, settings.activator_url, clock.now)
        multiscaler = Multiscaler(
            actuator=platform,
            scraper=Scraper(stat_client),
            config=settings.config,
            clock=clock,
            registry=registry,
            activator_probe=probe,
        )
        runner = web.AppRunner(StatServer(multiscaler, registry).app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, settings.bind_address, settings.port).start()
        log.info("autoscaler listening on %s:%d", settings.bind_address, settings.port)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(multiscaler.run_watch(platform))
                group.create_task(multiscaler.run_scraper())
                group.create_task(multiscaler.run_decider())
                await stop.wait()
                raise _Stop
        except* _Stop:
            log.info("stopping")
        finally:
            await multiscaler.aclose()
            await runner.cleanup()
            stat_client.close()


class _Stop(Exception):
    """Ends the task group on a signal."""


def main(argv: list[str]) -> int:
    if argv:
        print("usage: serving autoscaler   (configured by environment variables; see docs/autoscaling.md)")
        return 0 if argv[0] in ("-h", "--help") else 2
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        print(f"serving autoscaler: {exc}", file=sys.stderr)
        return 1
    logformat.configure(settings.log_format, settings.log_level)
    try:
        uvloop.run(run(settings))
    except Exception as exc:  # the root task failed: one line, non-zero exit
        log.exception("autoscaler failed")
        print(f"serving autoscaler: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    with contextlib.suppress(Exception):
        logging.shutdown()
    return 0
