"""Listening for clients: `serve` starts a server whose connections run a handler per request; `drain`
winds it down in order (stop accepting, finish what is in flight, then reset what is left)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import weakref
from typing import Final

from serving.http.connection import Connections, Handler, ServerConnection, ServerLimits

# Listen backlog: room for a burst of new connections while the loop is busy (nginx's default is 511).
_BACKLOG: Final = 1024

_DEFAULT_LIMITS: Final = ServerLimits()

# The connections of each live server, for `drain`; weak so a server closed without draining is forgotten.
_REGISTRIES: weakref.WeakKeyDictionary[asyncio.AbstractServer, Connections] = weakref.WeakKeyDictionary()


async def serve(
    handler: Handler,
    host: str,
    port: int,
    *,
    limits: ServerLimits = _DEFAULT_LIMITS,
    sock: socket.socket | None = None,
) -> asyncio.Server:
    """Listen on host:port (or `sock`) and run `handler` once per request; port 0 picks a free port."""
    loop = asyncio.get_running_loop()
    registry = Connections()

    def factory() -> ServerConnection:
        return ServerConnection(handler, limits, registry)

    if sock is not None:
        server = await loop.create_server(factory, sock=sock, backlog=_BACKLOG)
    else:
        server = await loop.create_server(factory, host, port, backlog=_BACKLOG, reuse_address=True)
    _REGISTRIES[server] = registry
    return server


async def drain(server: asyncio.Server, timeout: float) -> None:  # noqa: ASYNC109  # the documented API
    """Stop accepting; let in-flight exchanges finish (keep-alive connections close after them); abort what is
    left after `timeout` seconds."""
    registry = _REGISTRIES.pop(server, None) or Connections()
    server.close()
    registry.emptied = asyncio.Event()
    for conn in list(registry.members):
        conn.start_drain()
    if registry.members:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await registry.emptied.wait()
    for conn in list(registry.members):
        conn.abort()
