"""The raw-head checks that decide whether a response head is relayed as received."""

from __future__ import annotations

import re

import pytest

from serving import header
from serving.http import framing


@pytest.mark.parametrize(
    "names",
    [
        [b"a"],
        [b"a", b"ab", b"b"],
        [b"te", b"teapot", b"trailer", b"transfer-encoding"],
        [b"x.y", b"x+y", b"x"],  # regex metacharacters are escaped
        sorted(n.encode() for n in header.HOP_BY_HOP),
    ],
)
def test_alternation_matches_exactly_the_names(names: list[bytes]) -> None:
    pattern = re.compile(framing.alternation(names))
    for name in names:
        assert pattern.fullmatch(name), name
    near = {n + b"z" for n in names} | {n[:-1] for n in names if len(n) > 1} | {b"", b"xzy", b"q"}
    for other in near - set(names):
        assert not pattern.fullmatch(other), other


def lowered(*lines: str) -> bytes:
    return ("HTTP/1.1 200 OK\r\n" + "".join(f"{line}\r\n" for line in lines)).lower().encode()


@pytest.mark.parametrize("name", sorted(header.HOP_BY_HOP))
def test_every_hop_by_hop_header_is_found(name: str) -> None:
    assert framing.HOP_BY_HOP.search(lowered("Content-Length: 2", f"{name.title()}: x")) is not None


@pytest.mark.parametrize("name", ["Content-Length", "Teapot", "Connections", "Upgraded", "X-Connection"])
def test_end_to_end_headers_are_not_taken_for_hop_by_hop(name: str) -> None:
    assert framing.HOP_BY_HOP.search(lowered("Content-Length: 2", f"{name}: x")) is None


def test_a_chunked_head_is_relayable_only_with_nothing_else_hop_by_hop() -> None:
    def relayable(*lines: str) -> bool:
        lower = lowered(*lines)
        return framing.relayable(b"HTTP/1.1 " + lower[9:], lower, framing.coding(lower))

    assert relayable("Transfer-Encoding: chunked", "Content-Type: text/plain")
    assert not relayable("Transfer-Encoding: chunked", "Trailer: x")
    assert not relayable("Transfer-Encoding: gzip, chunked")
