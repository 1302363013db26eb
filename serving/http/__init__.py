"""The forwarding engine shared by the queue-proxy, the activator and the routers: HTTP/1.1 and h2c.

llhttp (via httptools) on asyncio Protocols, uvloop in production: client connections are parsed and handed
to a handler one request at a time; `Exchange.forward` relays to pooled keep-alive upstream connections, with
bodies streamed both ways under flow control. `serving.http.endpoints` serves a few fixed local paths (the
queue-proxy's side ports) on the same engine.

The HTTP/2 side (`H2Exchange`, `H2UpstreamPool`, and the `h2` package under them) is imported on first use: a
queue-proxy whose app and clients speak HTTP/1.1 never loads it, which keeps every pod's sidecar smaller.
"""

from typing import TYPE_CHECKING, Any

from serving.http.connection import Handler, ServerLimits
from serving.http.error import IdleTimeout, ResponseStartTimeout, UpstreamConnectError, UpstreamError
from serving.http.exchange import Exchange
from serving.http.message import Headers, Request
from serving.http.pool import UpstreamPool
from serving.http.server import Server, serve
from serving.http.upstream import ForwardTimeouts

if TYPE_CHECKING:
    from serving.http.h2server import H2Exchange
    from serving.http.h2upstream import H2UpstreamPool

__all__ = [
    "Exchange",
    "ForwardTimeouts",
    "H2Exchange",
    "H2UpstreamPool",
    "Handler",
    "Headers",
    "IdleTimeout",
    "Request",
    "ResponseStartTimeout",
    "Server",
    "ServerLimits",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamPool",
    "serve",
]


def __getattr__(name: str) -> Any:
    """`H2Exchange` and `H2UpstreamPool`, imported when first asked for (PEP 562)."""
    if name == "H2Exchange":
        from serving.http.h2server import H2Exchange

        return H2Exchange
    if name == "H2UpstreamPool":
        from serving.http.h2upstream import H2UpstreamPool

        return H2UpstreamPool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
