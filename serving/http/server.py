"""Listening for clients: `serve` starts a `Server` whose connections run a handler per request; its
`drain` winds it down in order (stop accepting, finish what is in flight, then reset what is left)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Final

from serving.http.connection import Connections, FastPath, Handler, ServerConnection, ServerLimits

# Listen backlog: room for a burst of new connections while the loop is busy (nginx's default is 511).
_BACKLOG: Final = 1024

_DEFAULT_LIMITS: Final = ServerLimits()


class Server:
    """A listening engine server and its open client connections."""

    def __init__(self, server: asyncio.Server, connections: Connections) -> None:
        self._server = server
        self._connections = connections

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets)

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful after listening on port 0)."""
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        """Client connections open now."""
        return len(self._connections.members)

    def close(self) -> None:
        """Stop accepting; open connections are left alone (`drain` winds them down)."""
        self._server.close()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109  # the documented API
        """Stop accepting; let in-flight exchanges finish (keep-alive connections close after them); abort
        what is left after `timeout` seconds."""
        self._server.close()
        registry = self._connections
        registry.emptied = asyncio.Event()
        for conn in list(registry.members):
            conn.start_drain()
        if registry.members:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await registry.emptied.wait()
        for conn in list(registry.members):
            conn.abort()


async def serve(
    handler: Handler,
    host: str,
    port: int,
    *,
    limits: ServerLimits = _DEFAULT_LIMITS,
    sock: socket.socket | None = None,
    fast: FastPath | None = None,
) -> Server:
    """Listen on host:port (or `sock`) and run `handler` once per request; port 0 picks a free port. With
    `fast`, an HTTP/1.1 request that arrived whole is offered to it first (see `FastPath`)."""
    loop = asyncio.get_running_loop()
    registry = Connections()

    def factory() -> ServerConnection:
        return ServerConnection(handler, limits, registry, fast)

    if sock is not None:
        server = await loop.create_server(factory, sock=sock, backlog=_BACKLOG)
    else:
        server = await loop.create_server(factory, host, port, backlog=_BACKLOG, reuse_address=True)
    return Server(server, registry)
