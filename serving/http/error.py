"""Domain errors of the forwarding engine; each proxy maps them to status codes in one place.

The engine itself only ever writes 400/431/500 (protocol problems and handler bugs); upstream failures surface
as these exceptions so that the queue-proxy, activator and router can each answer in their own words.
"""

from __future__ import annotations


class UpstreamConnectError(Exception):
    """Connecting to the upstream failed before any request byte was sent: nothing reached the app.

    Safe to retry on another pod.
    """


class UpstreamError(Exception):
    """The upstream failed after the request was (partly) sent.

    `response_started` tells whether the client already got part of the response; in that case the engine has
    aborted the client connection so the client never mistakes a truncated body for a complete one.
    """

    def __init__(self, message: str, *, response_started: bool) -> None:
        super().__init__(message)
        self.response_started = response_started


class ResponseStartTimeout(Exception):
    """No response head within `ForwardTimeouts.response_start`; nothing was written to the client."""


class IdleTimeout(Exception):
    """Nothing was read from the upstream for `ForwardTimeouts.idle` while relaying the response.

    If the response had started, the engine has aborted the client connection (check
    `Exchange.response_started`).
    """


def status_for(exc: Exception) -> int:
    """What the client gets for an exception that escaped its handler before any response: an upstream's
    failure is the upstream's (502, or 504 for its timeouts), never a 500 of the proxy's own."""
    if isinstance(exc, (UpstreamError, UpstreamConnectError)):
        return 502
    if isinstance(exc, (ResponseStartTimeout, IdleTimeout)):
        return 504
    return 500
