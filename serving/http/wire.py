"""Bytes-level pieces shared by both sides of the engine: status lines, header encoding, flow control.

Kept free of asyncio at run time so the framing rules can be read (and tested) on their own.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import asyncio


def native(name: str) -> Callable[..., object] | None:
    """A function of `serving.http._head`, the C module setup.py builds beside the compiled ones; None in a
    pure-Python build, whose callers do the same work in Python."""
    try:
        module = importlib.import_module("serving.http._head")
    except ImportError:
        return None
    function: Callable[..., object] = getattr(module, name)
    return function


H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""The HTTP/2 client connection preface (RFC 9113 section 3.4): how a prior-knowledge h2c client starts. Here,
not with the rest of HTTP/2, so that the HTTP/1.1 side can recognise it without importing `h2`."""

# Reason phrases, pre-encoded once: the response head is assembled from bytes only.
REASONS: Final = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}

# Request bodies are buffered up to this many bytes before the client socket stops being read. 64 KiB is
# asyncio's default write-buffer high-water mark, so one buffer's worth sits on each side of the engine.
BODY_HIGH_WATER: Final = 64 * 1024

# The interim response a client that sent `Expect: 100-continue` waits for before it sends the body.
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"

# Reasons a transport's reading is paused; reading resumes only when no reason is left.
PAUSE_BODY: Final = 1  # request body buffered above the high-water mark while the handler waits
PAUSE_PIPELINE: Final = 2  # a pipelined request waits for the current exchange to finish
PAUSE_PEER: Final = 4  # the other side's write buffer is full
PAUSE_STOP: Final = 8  # the connection is being closed


class ReadPause:
    """Reading of `transport` paused for any set of the `PAUSE_*` reasons; it resumes when none is left.

    A base of both connection protocols (client side and upstream side), so `pause`/`resume` stay one
    method call each on the hot path. A transport that is closing is left alone.
    """

    transport: asyncio.Transport | None
    _paused: int

    def pause(self, flag: int) -> None:
        if not self._paused and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._paused |= flag

    def resume(self, flag: int) -> None:
        if self._paused & flag:
            self._paused &= ~flag
            if not self._paused and self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()


def status_line(status: int, reason: bytes | None = None) -> bytes:
    """The HTTP/1.1 status line, with the standard reason phrase when none is given."""
    if reason is None:
        reason = REASONS.get(status, b"")
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


def encode_headers(items: Iterable[tuple[str, str]]) -> bytes:
    """`name: value` lines for headers given by a handler, refusing anything that would split the head."""
    out = []
    for name, value in items:
        if not name or any(c in name for c in " \t\r\n:") or "\r" in value or "\n" in value:
            raise ValueError(f"invalid header {name!r}")
        out.append(f"{name}: {value}\r\n")
    return encode("".join(out))


def encode(text: str) -> bytes:
    """Header text as sent: latin-1 round-trips what the parser decoded; anything else goes out as UTF-8."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def chunk(data: bytes) -> tuple[bytes, bytes, bytes]:
    """One chunk of a chunked body, as pieces for `writelines` (no copy of `data`)."""
    return (b"%x\r\n" % len(data), data, b"\r\n")


def last_chunk(trailers: list[tuple[bytes, bytes]]) -> bytes:
    """The terminating zero-size chunk with the trailer fields that came with the body."""
    if not trailers:
        return b"0\r\n\r\n"
    return b"".join([b"0\r\n", *(name + b": " + value + b"\r\n" for name, value in trailers), b"\r\n"])


def set_nodelay(sock: object) -> None:
    """Disable Nagle: heads and small bodies go out at once (each write is already a whole message piece).

    asyncio and uvloop both do this for TCP transports already; setting it again keeps the guarantee explicit.
    `sock` may be uvloop's socket-like object, hence the duck typing.
    """
    if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]  # duck-typed
