"""The raw-head checks that decide whether a response head is relayed as received."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving import header
from serving.http import framing
from tests.unit.serving.http.test_head import built


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


_NAMES = [
    *sorted(header.HOP_BY_HOP),
    header.APP_REFUSED,
    "content-length",
    # Near misses: same first letter, same length, or a hop-by-hop name inside a longer one.
    "content-type",
    "content-lengths",
    "connections",
    "x-connection",
    "teapot",
    "tf",
    "upgraded",
    "keep-alivf",
    "proxy-thing",
    "date",
    "server",
]


def reference_scan(pending: bytes, start: int) -> tuple[int, int]:
    """What `framing.scan` answers, from the head split into lines."""
    end = pending.find(b"\r\n\r\n", start)
    if end == -1:
        return -1, 0
    found = 0
    for line in pending[start:end].split(b"\r\n")[1:]:
        name = line.partition(b":")[0].lower()
        if name == b"content-length":
            found |= framing.HEAD_LENGTH
        elif name.decode("latin-1") in header.HOP_BY_HOP | {header.APP_REFUSED}:
            found |= framing.HEAD_HOP
    return end, found


@st.composite
def response_heads(draw: st.DrawFn) -> tuple[bytes, int]:
    """A response head as an upstream sends it (after an interim head, maybe), with a body that may look like
    a head; and where the final head starts."""
    interim = draw(
        st.sampled_from([b"", b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early\r\nLink: x\r\n\r\n"])
    )
    fields = draw(
        st.lists(
            st.tuples(
                st.sampled_from(_NAMES).map(lambda name: name.encode()),
                st.sampled_from([bytes.lower, bytes.upper, bytes.title]),
                st.binary(max_size=12).map(lambda v: v.replace(b"\r", b"").replace(b"\n", b"")),
            ),
            max_size=8,
        )
    )
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(case(n) + b": " + v + b"\r\n" for n, case, v in fields) + b"\r\n"
    body = draw(st.sampled_from([b"", b"hello", b"x\r\nConnection: close\r\n\r\n"]))
    cut = draw(st.integers(min_value=0, max_value=3))  # a head not all there yet
    pending = interim + head + body
    if cut:
        pending = interim + head[: len(head) - cut]
    return pending, len(interim)


@settings(max_examples=400, deadline=None)
@given(response_heads())
def test_both_scans_of_a_response_head_agree_with_reading_it_line_by_line(case: tuple[bytes, int]) -> None:
    pending, start = case
    expected = reference_scan(pending, start)
    for scan in (framing._scan_calls, framing.scan):
        end, found = scan(pending, start)
        assert (int(end), int(found)) == expected, scan.__name__


@pytest.mark.parametrize(
    ("pending", "start", "expected"),
    [
        pytest.param(b"", 0, (-1, 0), id="empty"),
        pytest.param(b"HTTP/1.1 200 OK", 0, (-1, 0), id="status-line-unfinished"),
        pytest.param(b"HTTP/1.1 200 OK\r\n\r", 0, (-1, 0), id="last-byte-missing"),
        pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", 0, (23, 0), id="no-field"),
        pytest.param(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n", 0, (21, 0), id="one-field"),
        pytest.param(b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 0\r\n\r\n", 0, (34, 1), id="upper-case"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTe: x\r\n\r\n", 0, (22, 2), id="shortest-hop"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nA: b\r\n\r\n", 99, (-1, 0), id="start-past-end"
        ),
        pytest.param(b"xx" + b"HTTP/1.1 200 OK\r\nKeep-Alive: 1\r\n\r\n", 2, (32, 2), id="after-start"),
        pytest.param(
            b"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, (38, 1), id="empty-lines-first"
        ),
        pytest.param(b"\r\n\r\n", 0, (-1, 0), id="empty-lines-only"),
    ],
)
def test_the_scans_agree_on_edges(pending: bytes, start: int, expected: tuple[int, int]) -> None:
    native = built(framing._NATIVE)
    scans = [framing._scan_calls] + ([] if native is None else [framing.scan])
    for scan in scans:
        end, found = scan(pending, start)
        assert (int(end), int(found)) == expected, scan.__name__


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=-5, max_value=210))
def test_the_native_scan_reads_any_bytes_without_failing(pending: bytes, start: int) -> None:
    native = built(framing._NATIVE)
    if native is None:
        return
    end, found = native(pending, start, framing._SCAN_NAMES)
    assert -1 <= end < len(pending)
    assert found in (0, 1, 2, 3)
    if end == -1:
        assert found == 0


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("head", 0, (b"a",)), id="str-head"),
        pytest.param((b"head", 0, ()), id="no-names"),
        pytest.param((b"head", 0, ("a",)), id="str-name"),
        pytest.param((b"head", 0, (b"",)), id="empty-name"),
        pytest.param((b"head", 0), id="two-arguments"),
        pytest.param((b"head", "0", (b"a",)), id="str-start"),
    ],
)
def test_the_native_scan_refuses_arguments_it_cannot_read(args: tuple[object, ...]) -> None:
    native = built(framing._NATIVE)
    if native is None:
        return
    with pytest.raises(TypeError):
        native(*args)  # type: ignore[arg-type]  # deliberately wrong
