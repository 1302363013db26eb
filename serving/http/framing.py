"""How a relayed response is framed for the client, read from the raw response head.

The engine does not have llhttp call back once per response header: it looks at the head as a whole, lowered
once. Most upstream responses carry only end-to-end headers plus Content-Length (or `Transfer-Encoding:
chunked` for an HTTP/1.1 client) and are relayed byte for byte; anything else is rebuilt line by line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, cast

from serving import header
from serving.http import wire

if TYPE_CHECKING:
    from mypy_extensions import i64  # a native integer when compiled; only ever an annotation

# How the response body is framed towards the client.
NO_BODY: Final = 0  # HEAD, 204, 304
LENGTH: Final = 1  # Content-Length passed through
CHUNKED: Final = 2  # re-chunked (upstream chunked or close-delimited, HTTP/1.1 client)
UNTIL_CLOSE: Final = 3  # close-delimited (HTTP/1.0 client and no Content-Length)
UPGRADE: Final = 4  # 101: a raw two-way relay follows


def alternation(names: Iterable[bytes]) -> bytes:
    """A regular expression matching any of `names`, factored by common prefixes: sre skips a branch on its
    first byte, so a line is rejected after a byte or two instead of after a try of every name (this halves
    the cost of a search of a usual head)."""
    groups: dict[bytes, list[bytes]] = {}
    empty = False
    for name in names:
        if name:
            groups.setdefault(name[:1], []).append(name[1:])
        else:
            empty = True
    branches = [re.escape(first) + alternation(rest) for first, rest in sorted(groups.items())]
    if empty:
        branches.append(b"")
    return branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"


# Hop-by-hop response headers: never relayed, so a head carrying one is rebuilt. The queue-proxy's mark of a
# 502 for a refused app connection is for the next proxy only, never for a client.
_DROPPED: Final = frozenset(name.encode("ascii") for name in header.HOP_BY_HOP | {header.APP_REFUSED})
# The same names but Transfer-Encoding (relayed when it is exactly chunked), as found in a lowered head;
# llhttp has already refused whitespace before the colon.
_HOP_BY_HOP: Final = re.compile(rb"\r\n" + alternation(_DROPPED - {b"transfer-encoding"}) + b":")
# Every hop-by-hop name, Transfer-Encoding included: a head with none of them (and Content-Length) is relayed
# as received without a closer look.
HOP_BY_HOP: Final = re.compile(rb"\r\n" + alternation(_DROPPED) + b":")
LENGTH_HEADER: Final = b"\r\ncontent-length:"  # as found in a lowered head
_END: Final = b"\r\n\r\n"
APP_REFUSED: Final = b"\r\n" + header.APP_REFUSED.encode("ascii") + b":"  # as found in a lowered head
_CODING: Final = b"\r\ntransfer-encoding:"


# What `scan` found in a head.
HEAD_LENGTH: Final = 1  # a Content-Length field
HEAD_HOP: Final = 2  # a field that `HOP_BY_HOP` matches

_LENGTH_NAME: Final = b"content-length"
_SCAN_NAMES: Final = (_LENGTH_NAME, *sorted(_DROPPED))
"""What the native scan looks for: Content-Length (`HEAD_LENGTH`), then each dropped name (`HEAD_HOP`)."""

NativeScan = Callable[[bytes, int, tuple[bytes, ...]], tuple[int, int]]
_NATIVE: Final = cast("NativeScan | None", wire.native("scan"))


def scan(pending: bytes, start: i64) -> tuple[i64, i64]:
    """Where the response head that starts at `start` in `pending` ends (the index of the CRLF CRLF that ends
    it, -1 if it has not ended) and what it holds (`HEAD_LENGTH`, `HEAD_HOP`). Empty lines before it, which
    llhttp accepts, are passed over.

    The usual head (Content-Length and nothing hop-by-hop) is relayed as received on this answer alone, so it
    is the per-response cost of reading one. Built, it is one pass of memchr over the bytes in C, comparing
    only field names (a third of the instructions the same loop took compiled with mypyc, on the benchmark's
    usual head); in a pure-Python build, a few calls into C."""
    native = _NATIVE
    if native is not None:
        return native(pending, start, _SCAN_NAMES)
    return _scan_calls(pending, start)


def _scan_calls(pending: bytes, start: i64) -> tuple[i64, i64]:
    """`scan` without the native module: the same answer from calls into C (`bytes.find`, `re`)."""
    size = len(pending)
    while start < size and (pending[start] == 13 or pending[start] == 10):
        start += 1  # empty lines before a response, which llhttp skips
    end = pending.find(_END, start)
    if end == -1:
        return -1, 0
    lower = pending[start : end + 2].lower()
    found: i64 = 0
    if lower.find(LENGTH_HEADER) != -1:  # `in` would first try the needle as an int
        found |= HEAD_LENGTH
    if HOP_BY_HOP.search(lower) is not None:
        found |= HEAD_HOP
    return end, found


def coding(lower: bytes) -> bytes | None:
    """The (lowered) Transfer-Encoding value of a lowered head, if it has one."""
    at = lower.find(_CODING)
    if at == -1:
        return None
    start = at + len(_CODING)
    return lower[start : lower.find(b"\r\n", start)].strip()


def relayable(raw: bytes, lower: bytes, coding: bytes | None) -> bool:
    """Whether a head can go to the client as received: an HTTP/1.1 status line, nothing hop-by-hop but a
    single `Transfer-Encoding: chunked`."""
    return (
        raw.startswith(b"HTTP/1.1 ")
        and _HOP_BY_HOP.search(lower) is None
        and (coding is None or (coding == b"chunked" and lower.count(_CODING) == 1))
    )


def frame(status: int, head_request: bool, has_length: bool, version: str) -> int:
    """The client-side framing of a final response."""
    if status == 101:
        return UPGRADE
    if head_request or status == 204 or status == 304:
        return NO_BODY
    if has_length:
        return LENGTH
    return CHUNKED if version == "1.1" else UNTIL_CLOSE


def is_chunked(coding: bytes | None) -> bool:
    """Whether a (lowered) Transfer-Encoding value ends with chunked; otherwise the body runs until close."""
    return coding is not None and coding.rsplit(b",", 1)[-1].strip() == b"chunked"


def rebuilt_head(raw: bytes, status: int, kind: int, coding: bytes | None) -> list[bytes]:
    """Status line and header lines for the client: hop-by-hop headers (and those named in Connection)
    dropped, trailers no longer announced (they are dropped), framing written by the engine."""
    lines = raw.lstrip(b"\r\n").split(b"\r\n")
    reason = lines[0].split(b" ", 2)[2] if lines[0].count(b" ") >= 2 else b""
    out = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    kept: list[tuple[bytes, bytes]] = []
    tokens: set[bytes] = set()
    upgrade = b""
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        lower = name.lower()
        if lower == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
        elif lower == b"upgrade":
            upgrade = value.strip()
        elif lower == b"content-length" and status == 204:
            continue
        if lower in _DROPPED:
            continue
        kept.append((lower, line + b"\r\n"))
    # An app's `Connection` tokens never remove the length that frames the body relayed after this head.
    tokens.discard(b"content-length")
    out += (line for lower, line in kept if lower not in tokens)
    if kind == UPGRADE:
        out.append(b"connection: upgrade\r\nupgrade: " + upgrade + b"\r\n")
    elif kind == CHUNKED:
        codings = [c.strip() for c in coding.split(b",")] if coding else []
        if codings and codings[-1] == b"chunked":
            codings.pop()
        out.append(b"transfer-encoding: " + b", ".join([*codings, b"chunked"]) + b"\r\n")
    return out
