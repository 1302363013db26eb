"""Running the queue-proxy's small aiohttp servers (admin, stats, metrics) as long-lived tasks."""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from aiohttp import web

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT: Final = 5.0
"""Seconds a side server waits for its own in-flight requests (scrapes, wait-for-drain) at exit."""


async def run_site(name: str, app: web.Application, host: str, port: int) -> None:
    """Serve `app` until cancelled. A port that cannot be bound fails the task (and so the process)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise OSError(
                exc.errno, f"{name} server cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
        logger.info("%s server listening on %s:%d", name, host, port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
