from __future__ import annotations

import pytest

from queueproxy.rewrite import forwarded_value, prepare, scan
from serving.http import Headers


def rewritten(*items: tuple[str, str]) -> tuple[list[tuple[str, str]], bool]:
    headers = Headers(items)
    proxied = prepare(headers, scan(headers))
    return headers.items(), proxied


def test_routing_headers_are_stripped() -> None:
    items, _ = rewritten(
        ("Host", "hello.default.svc"),
        ("Knative-Serving-Revision", "hello-00001"),
        ("Knative-Serving-Namespace", "default"),
        ("Accept", "*/*"),
    )
    assert items == [("host", "hello.default.svc"), ("accept", "*/*")]


def test_original_host_becomes_host() -> None:
    items, _ = rewritten(
        ("Host", "10.0.0.7:8012"), ("K-Original-Host", "hello.example.com"), ("Accept", "*/*")
    )
    assert ("host", "hello.example.com") in items
    assert ("host", "10.0.0.7:8012") not in items
    assert all(name != "k-original-host" for name, _ in items)


def test_original_user_agent_becomes_user_agent() -> None:
    items, _ = rewritten(("Host", "hello.example.com"), ("K-Original-User-Agent", "kube-probe/1.30"))
    assert items == [("host", "hello.example.com"), ("user-agent", "kube-probe/1.30")]


@pytest.mark.parametrize(
    ("value", "proxied"),
    [
        pytest.param("activator", True, id="activator"),
        pytest.param("other", False, id="other-value"),
    ],
)
def test_proxy_request_marks_proxied(value: str, proxied: bool) -> None:
    items, marked = rewritten(("Host", "h"), ("K-Proxy-Request", value))
    assert marked is proxied
    assert items == [("host", "h")], "the hop header never reaches the app"


def test_no_marker_is_not_proxied() -> None:
    assert rewritten(("Host", "x"))[1] is False


def test_forwarded_synthesised_from_x_forwarded() -> None:
    items, _ = rewritten(
        ("X-Forwarded-For", "203.0.113.7, 10.0.0.1"),
        ("X-Forwarded-For", "10.0.0.2"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "hello.example.com"),
    )
    assert (
        "forwarded",
        "for=203.0.113.7;host=hello.example.com;proto=https, for=10.0.0.1, for=10.0.0.2",
    ) in items
    assert ("x-forwarded-for", "203.0.113.7, 10.0.0.1") in items, "X-Forwarded-* stay for apps that read them"


def test_existing_forwarded_is_kept() -> None:
    items, _ = rewritten(("Forwarded", "for=192.0.2.1"), ("X-Forwarded-For", "203.0.113.7"))
    assert [value for name, value in items if name == "forwarded"] == ["for=192.0.2.1"]


def test_no_forwarded_without_x_forwarded() -> None:
    items, _ = rewritten(("Host", "x"))
    assert all(name != "forwarded" for name, _ in items)


@pytest.mark.parametrize(
    ("forwarded_for", "host", "proto", "expected"),
    [
        pytest.param(["2001:db8::1"], None, None, 'for="[2001:db8::1]"', id="ipv6-bracketed-quoted"),
        pytest.param(["192.0.2.1:4711"], None, None, 'for="192.0.2.1:4711"', id="port-quoted"),
        pytest.param([], "example.com:8080", "http", 'host="example.com:8080";proto=http', id="host-only"),
        pytest.param([], None, "https", "proto=https", id="proto-only"),
        pytest.param([" , "], None, None, None, id="empty-for"),
        pytest.param(["unknown"], None, None, "for=unknown", id="token"),
    ],
)
def test_forwarded_value(
    forwarded_for: list[str], host: str | None, proto: str | None, expected: str | None
) -> None:
    assert forwarded_value(forwarded_for, host, proto) == expected


def test_scan_keeps_the_first_value_of_watched_headers_only() -> None:
    headers = Headers(
        [("User-Agent", "a"), ("User-Agent", "b"), ("Accept", "*/*"), ("K-Network-Probe", "queue")]
    )
    assert scan(headers) == {"user-agent": "a", "k-network-probe": "queue"}
