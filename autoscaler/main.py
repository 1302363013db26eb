"""`serving autoscaler`: wires settings, the platform client, the scraper, the multiscaler and the stat
server, then runs the watch, scrape and decide loops until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

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

LEASE = "serving-autoscaler"
"""The Lease replicas of the autoscaler elect their leader with; also the value of the leader's pod label."""


async def run(settings: Settings, terminating: asyncio.Event) -> None:
    """Run the watch, scrape and decide loops until `terminating` is set."""
    registry = CollectorRegistry()
    clock = MonotonicClock()
    stat_client = StatClient(timeout=settings.scrape_timeout)
    async with (
        aiohttp.ClientSession() as platform_session,
        connect(settings.platform_url, platform_session, pod_start_times=True) as platform,
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
        leading = asyncio.Event()
        if not settings.leader_elect:
            leading.set()
        server = StatServer(multiscaler, registry, accepting=leading.is_set)
        runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, settings.bind_address, settings.port).start()
        log.info("autoscaler listening on %s:%d", settings.bind_address, settings.port)

        async def act() -> None:
            async with asyncio.TaskGroup() as group:
                group.create_task(multiscaler.run_watch(platform))
                group.create_task(multiscaler.run_scraper())
                group.create_task(multiscaler.run_decider())

        try:
            await lifecycle.supervise(
                terminating,
                [_lead(settings, platform, leading, act) if settings.leader_elect else act()],
                _stopping,
            )
        finally:
            await multiscaler.aclose()
            await runner.cleanup()
            stat_client.close()


async def _lead(
    settings: Settings, platform: object, leading: asyncio.Event, act: Callable[[], Awaitable[None]]
) -> None:
    """Wait for the `serving-autoscaler` Lease; once held, mark this pod as the leader (the autoscaler
    Service selects the mark, so the activators' stats come here), take stats and act."""
    from serving.kube.lease import hold, mark_leader
    from serving.kube.platform import KubePlatform

    if not isinstance(platform, KubePlatform):  # the contract allows LEADER_ELECT only on Kubernetes
        raise TypeError(f"leader election needs the Kubernetes platform, not {type(platform).__name__}")
    kube = platform.kube

    async def work() -> None:
        await mark_leader(kube, settings.system_namespace, settings.pod_name, LEASE)
        leading.set()
        await act()

    log.info("%s waiting for lease %s/%s", settings.pod_name, settings.system_namespace, LEASE)
    await hold(kube, settings.system_namespace, LEASE, settings.pod_name, work)


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
