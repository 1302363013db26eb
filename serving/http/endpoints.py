"""A few fixed paths answered locally on a port of their own: the side servers (admin, stats, metrics) of a
component, served by the engine so that a component needs no web framework to offer them.

`run_endpoints` serves a path -> `Endpoint` map until cancelled. Only GET and HEAD reach an endpoint
(others get 405 with `Allow`), the query string is ignored for the match, an unknown path gets 404, and on
cancellation the requests in flight get `SHUTDOWN_TIMEOUT` seconds to finish.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from serving.http.connection import Handler
from serving.http.exchange import Exchange
from serving.http.server import serve

logger = logging.getLogger(__name__)

Endpoint = Callable[[Exchange], Awaitable[None]]
"""Answers one request (with `Exchange.respond`)."""

SHUTDOWN_TIMEOUT: Final = 5.0
"""Seconds a side server waits for its own in-flight requests (scrapes, wait-for-drain) at exit."""

TEXT: Final = ("content-type", "text/plain; charset=utf-8")
_READ_ONLY: Final = ("GET", "HEAD")


def endpoints(routes: Mapping[str, Endpoint]) -> Handler:
    """The engine handler that dispatches on the request's path."""

    async def handle(exchange: Exchange) -> None:
        request = exchange.request
        endpoint = routes.get(request.target.partition("?")[0])
        if endpoint is None:
            await exchange.respond(404, (TEXT,), b"404: Not Found\n")
        elif request.method not in _READ_ONLY:
            await exchange.respond(405, (TEXT, ("allow", "GET, HEAD")), b"405: Method Not Allowed\n")
        else:
            await endpoint(exchange)

    return handle


async def run_endpoints(
    name: str,
    routes: Mapping[str, Endpoint],
    host: str,
    port: int,
    *,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
) -> None:
    """Serve `routes` until cancelled. A port that cannot be bound fails the task (and so the process)."""
    try:
        server = await serve(endpoints(routes), host, port)
    except OSError as exc:
        raise OSError(exc.errno, f"{name} server cannot listen on {host}:{port}: {exc.strerror}") from None
    logger.info("%s server listening on %s:%d", name, host, server.port)
    try:
        await asyncio.Event().wait()
    finally:
        await server.drain(shutdown_timeout)
