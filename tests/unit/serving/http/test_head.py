"""Request heads read and written in C (`serving/http/_head.c`) where the build compiles: the same results as
the Python the engine falls back on."""

from __future__ import annotations

from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.http import connection, exchange
from serving.http.message import Headers, Request
from tests.unit.test_compiled import SETUP

F = TypeVar("F")


def built(native: F | None) -> F | None:
    """A function of the C module, checked to be there wherever the build compiles (None only where it cannot,
    and nothing built the module)."""
    assert native is not None or not SETUP.can_compile(), (
        "the build compiles, so serving.http._head must be there"
    )
    return native


def reference(method: str, target: str, fields: list[tuple[str, str]]) -> bytes | None:
    """The head as the engine writes it in Python, or None where the native writer declines."""
    if any(name in exchange._NOT_FORWARDED for name, _ in fields) or all(
        name != "host" for name, _ in fields
    ):
        return None
    text = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields) + "\r\n"
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return None


class _Name(str):
    """A str subclass: its hashing or formatting may run Python code, so the native writer declines it."""

    __slots__ = ()


_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF), max_size=12)
_NAMES = st.sampled_from(
    ["host", "accept", "x-request-id", "connection", "te", "expect", "user-agent", "é", "hos"]
)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["GET", "POST", "PROPFIND"]),
    st.sampled_from(["/", "/a?b=c", "*", "/ü"]),
    st.lists(st.tuples(_NAMES, _TEXT), max_size=6),
)
def test_the_native_head_is_the_python_one(method: str, target: str, fields: list[tuple[str, str]]) -> None:
    native = built(exchange._NATIVE_HEAD)
    if native is None:
        return
    assert native(method, target, fields, exchange._NOT_FORWARDED) == reference(method, target, fields)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            [("host", "a:1"), ("x-y", "\xe9")],
            b"GET /p HTTP/1.1\r\nhost: a:1\r\nx-y: \xe9\r\n\r\n",
            id="latin-1",
        ),
        pytest.param([("host", "a:1"), ("x-y", "\u20ac")], None, id="beyond-latin-1"),
        pytest.param([("host", "a:1"), ("connection", "close")], None, id="hop-by-hop"),
        pytest.param([], None, id="no-field"),
        pytest.param([("host", "h"), (_Name("x-a"), "1")], None, id="str-subclass-name"),
        pytest.param([("host", "h"), ("x-a", _Name("1"))], None, id="str-subclass-value"),
    ],
)
def test_the_native_head_declines_what_python_must_write(
    fields: list[tuple[str, str]], expected: bytes | None
) -> None:
    native = built(exchange._NATIVE_HEAD)
    if native is None:
        return
    assert native("GET", "/p", fields, exchange._NOT_FORWARDED) == expected
    assert native(_Name("GET"), "/p", fields, exchange._NOT_FORWARDED) is None
    assert native("GET", "/p", fields, set(exchange._NOT_FORWARDED)) is None  # type: ignore[arg-type]  # a set, not frozen


@pytest.mark.parametrize(
    "args",
    [
        pytest.param((b"GET", "/", [], frozenset()), id="bytes-method"),
        pytest.param(("GET", "/", [("a",)], frozenset()), id="short-pair"),
        pytest.param(("GET", "/", [("a", b"b")], frozenset()), id="bytes-value"),
        pytest.param(("GET", "/", (("a", "b"),), frozenset()), id="tuple-of-fields"),
        pytest.param(("GET", "/", []), id="three-arguments"),
    ],
)
def test_the_native_head_refuses_arguments_it_cannot_read(args: tuple[object, ...]) -> None:
    native = built(exchange._NATIVE_HEAD)
    if native is None:
        return
    with pytest.raises(TypeError):
        native(*args)  # type: ignore[arg-type]  # deliberately wrong


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            [("host", "h"), ("accept", "*/*")],
            b"GET /p HTTP/1.1\r\nhost: h\r\naccept: */*\r\n\r\n",
            id="usual",
        ),
        pytest.param(
            [("host", "h"), ("connection", "x-a"), ("x-a", "1"), ("x-b", "\u20ac")],
            "GET /p HTTP/1.1\r\nhost: h\r\nx-b: \u20ac\r\n\r\n".encode(),
            id="hop-by-hop-and-wide",
        ),
        pytest.param(
            [("accept", "*/*")], b"GET /p HTTP/1.1\r\naccept: */*\r\nhost: up:80\r\n\r\n", id="no-host"
        ),
    ],
)
def test_the_upstream_head_is_the_same_either_way(fields: list[tuple[str, str]], expected: bytes) -> None:
    request = Request("GET", "/p", "1.1", Headers._trusted(list(fields)), ("127.0.0.1", 1), True, False)
    assert exchange._request_head(request, request.headers, "up:80", False, None) == expected


_RAW = st.binary(max_size=16)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_RAW, _RAW), max_size=8))
def test_native_fields_are_decoded_and_lowered_as_python_does(raw: list[tuple[bytes, bytes]]) -> None:
    """Names are lowered in ASCII only: llhttp lets nothing else into a name, where `str.lower` would also
    lower Latin-1 letters; so the names compared are ASCII ones."""
    native = built(connection._NATIVE_FIELDS)
    if native is None:
        return
    expected = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in raw]
    decoded = native(raw)
    assert [v for _, v in decoded] == [v for _, v in expected]
    for (name, _), (reference_name, _), (raw_name, _) in zip(decoded, expected, raw, strict=True):
        if raw_name.isascii():
            assert name == reference_name
        else:
            assert name.encode("latin-1").lower() == raw_name.lower()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param((), id="tuple"),
        pytest.param([(b"a",)], id="short-pair"),
        pytest.param([("a", b"b")], id="str-name"),
        pytest.param([(b"a", bytearray(b"b"))], id="bytearray-value"),
    ],
)
def test_native_fields_refuse_what_llhttp_never_gives(raw: object) -> None:
    native = built(connection._NATIVE_FIELDS)
    if native is None:
        return
    with pytest.raises(TypeError):
        native(raw)  # type: ignore[arg-type]  # deliberately wrong
