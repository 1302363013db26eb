"""The life of one exchange, in one place: its states, and the rule for keeping the client connection open.

A leaf module (it imports nothing of the engine), so the exchange, the upstream connection, the upgrade relay
and the client connection all read the same definitions; only `Exchange` methods change an exchange's state.
"""

from __future__ import annotations

from typing import Final

NEW: Final = 0
"""Nothing of a response has reached the client: a local (error) answer is still possible."""
STARTED: Final = 1
"""Part of the response head or body went to the client: only the rest of it, or an abort, can follow."""
DONE: Final = 2
"""The whole response went to the client (or the upgraded relay ended)."""
ABORTED: Final = 3
"""The client connection was reset, so that a partial response never looks complete."""


def keeps_alive(
    client_keep_alive: bool, upgrade: bool, body_complete: bool, draining: bool, until_close: bool
) -> bool:
    """Whether the client connection stays open after a response: the client asked for it (HTTP/1.1's
    default, HTTP/1.0's `keep-alive`), the request was no upgrade, its body has been read whole (the rest of
    a body cannot be told from the next request without reading it), the server is not draining, and the
    response is not delimited by closing the connection."""
    return client_keep_alive and not upgrade and body_complete and not draining and not until_close
