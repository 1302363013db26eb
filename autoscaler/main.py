"""`serving autoscaler`: wires settings, the platform client, the scraper, the multiscaler and the stat
server, then runs the watch, scrape and decide loops until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging

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
from serving import lifecycle
from serving.clock import MonotonicClock
from serving.kube.connect import connect

log = logging.getLogger("autoscaler")


async def run(settings: Settings, terminating: asyncio.Event) -> None:
    """Run the watch, scrape and decide loops until `terminating` is set."""
    registry = CollectorRegistry()
    clock = MonotonicClock()
    stat_client = StatClient(timeout=settings.scrape_timeout)
    async with (
        aiohttp.ClientSession() as platform_session,
        connect(settings.platform_url, platform_session) as platform,
    ):
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
            await lifecycle.supervise(
                terminating,
                [multiscaler.run_watch(platform), multiscaler.run_scraper(), multiscaler.run_decider()],
                _stopping,
            )
        finally:
            await multiscaler.aclose()
            await runner.cleanup()
            stat_client.close()


async def _stopping() -> None:
    log.info("stopping")


def main(argv: list[str]) -> int:
    return lifecycle.run_component(
        "autoscaler",
        argv,
        usage="usage: serving autoscaler  (configured by environment variables; see docs/autoscaling.md)",
        load=load_settings,
        log=lambda settings: settings,
        main=run,
        loop_factory=uvloop.new_event_loop,
    )
