from __future__ import annotations

import pytest

from serving.http import Headers


def test_lookups_ignore_case_and_keep_order() -> None:
    headers = Headers([("Host", "a"), ("X-Many", "1"), ("x-many", "2")])
    assert headers.get("HOST") == "a"
    assert headers.get_all("X-MANY") == ["1", "2"]
    assert "x-Many" in headers
    assert "absent" not in headers
    assert headers.get("absent", "d") == "d"
    assert headers.items() == [("host", "a"), ("x-many", "1"), ("x-many", "2")]


def test_set_replaces_every_value_and_remove_drops_them() -> None:
    headers = Headers([("A", "1"), ("b", "2"), ("a", "3")])
    headers.set("a", "4")
    assert headers.items() == [("b", "2"), ("a", "4")]
    headers.remove("B")
    assert headers.items() == [("a", "4")]


def test_copy_is_independent() -> None:
    headers = Headers([("a", "1")])
    copy = headers.copy()
    copy.add("b", "2")
    assert "b" not in headers
    assert copy.get("b") == "2"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("x", "a\r\nInjected: 1", id="crlf-in-value"),
        pytest.param("x\r\n", "a", id="crlf-in-name"),
        pytest.param("a b", "a", id="space-in-name"),
        pytest.param("", "a", id="empty-name"),
    ],
)
def test_values_that_would_split_the_head_are_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        Headers().add(name, value)
