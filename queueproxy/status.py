"""The one place where the queue-proxy turns domain errors into HTTP responses it writes itself.

Statuses follow Knative's queue-proxy: a full queue is 503 (with `Retry-After`), an app that refuses the
connection is 502, any timeout before the response started is 504. The 502 for a refused connection carries
`k-app-refused: 1`: nothing reached the app, so the activator or router in front may retry on another pod.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from serving import header
from serving.breaker import QueueFull
from serving.http import IdleTimeout, ResponseStartTimeout, UpstreamConnectError, UpstreamError

_TEXT: Final = ("content-type", "text/plain; charset=utf-8")

RETRY_AFTER_SECONDS: Final = "1"
"""A full queue is usually brief (one request's latency), so clients may retry after a second."""


class RequestTimeout(Exception):
    """The request's total time (queue wait included) reached `REVISION_TIMEOUT_SECONDS`."""


@dataclass(frozen=True, slots=True)
class LocalResponse:
    """A complete response the queue-proxy writes instead of the app's."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = (_TEXT,)


QUEUE_FULL: Final = LocalResponse(
    503, b"pending request queue full\n", (_TEXT, ("retry-after", RETRY_AFTER_SECONDS))
)
REQUEST_TIMEOUT: Final = LocalResponse(504, b"request timeout\n")
RESPONSE_START_TIMEOUT: Final = LocalResponse(504, b"timed out waiting for the app to start its response\n")
IDLE_TIMEOUT: Final = LocalResponse(504, b"timed out waiting for the app to send data\n")
APP_REFUSED: Final = LocalResponse(
    502, b"connection refused by the app\n", (_TEXT, (header.APP_REFUSED, "1"))
)
APP_FAILED: Final = LocalResponse(502, b"error reading the app's response\n")

_BY_ERROR: Final[tuple[tuple[type[BaseException], LocalResponse], ...]] = (
    (QueueFull, QUEUE_FULL),
    (RequestTimeout, REQUEST_TIMEOUT),
    (ResponseStartTimeout, RESPONSE_START_TIMEOUT),
    (IdleTimeout, IDLE_TIMEOUT),
    (UpstreamConnectError, APP_REFUSED),
    (UpstreamError, APP_FAILED),
)

HANDLED: Final = tuple(error for error, _ in _BY_ERROR)
"""The errors `response_for` maps; anything else is a bug and propagates."""


def response_for(error: BaseException) -> LocalResponse:
    """The response for a domain error raised while admitting or forwarding a request."""
    for kind, response in _BY_ERROR:
        if isinstance(error, kind):
            return response
    raise TypeError(f"no response is defined for {type(error).__name__}") from error
