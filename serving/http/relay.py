"""The raw two-way byte relay that follows a relayed `101 Switching Protocols` (websockets and the like).

Bytes are copied as they arrive, with the same pause/resume flow control as HTTP bodies. A FIN from one side
is passed on as a half-close to the other; the relay ends when both sides have sent FIN or either connection
is lost, and then both connections are closed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serving.http.connection import ServerConnection
    from serving.http.exchange import Exchange
    from serving.http.upstream import Completion, UpstreamConnection


class Relay:
    """Joins a client connection and an upstream connection after an upgrade; resolves `done` with 101."""

    __slots__ = ("_client", "_client_eof", "_done", "_exchange", "_finished", "_upstream", "_upstream_eof")

    def __init__(
        self,
        client: ServerConnection,
        upstream: UpstreamConnection,
        exchange: Exchange,
        done: Completion,
    ) -> None:
        self._client = client
        self._exchange = exchange
        self._upstream = upstream
        self._done = done
        self._client_eof = False
        self._upstream_eof = False
        self._finished = False

    def from_upstream(self, data: bytes) -> None:
        self._client.write(data)

    def client_eof(self) -> bool:
        """The client half-closed: pass it on; keep the client transport open to send the rest."""
        self._client_eof = True
        transport = self._upstream.transport
        if self._upstream_eof or transport is None or not transport.can_write_eof():
            self.finish()
            return False
        transport.write_eof()
        return True

    def upstream_eof(self) -> bool:
        """The upstream half-closed: pass it on; keep the upstream transport open to send the rest."""
        self._upstream_eof = True
        transport = self._client.transport
        if self._client_eof or transport is None or not transport.can_write_eof():
            self.finish()
            return False
        transport.write_eof()
        return True

    def client_lost(self) -> None:
        self.finish()

    def upstream_lost(self) -> None:
        self.finish()

    def finish(self) -> None:
        """Both directions are over: close both connections (flushing what is buffered) and report 101."""
        if self._finished:
            return
        self._finished = True
        self._exchange.mark_done()
        self._detach()
        self._client.close_transport()
        self._upstream.close()
        if not self._done.done():
            self._done.set_result(101)

    def abort(self) -> None:
        """The forwarding task was cancelled: reset both connections."""
        if self._finished:
            return
        self._finished = True
        self._exchange.mark_aborted()
        self._detach()
        self._client.abort()
        self._upstream.abort()

    def _detach(self) -> None:
        client, upstream = self._client, self._upstream
        if client.relay is self:
            client.relay = None
        if client.write_listener is upstream:
            client.write_listener = None
        upstream.relay = None
        upstream.unbind()
