from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from controller.reconcile.routetable import RouteTable, normalize_host, service_routes, url
from serving.platform import RevisionKey


@dataclass(frozen=True)
class Target:
    revision: str
    percent: int
    tag: str | None = None


@pytest.mark.parametrize(
    ("header", "host"),
    [
        pytest.param("hello.default.localhost", "hello.default.localhost", id="plain"),
        pytest.param("hello.default.localhost:8080", "hello.default.localhost", id="with-port"),
        pytest.param("Hello.Default.LOCALHOST:80", "hello.default.localhost", id="case"),
        pytest.param("hello.default.localhost.", "hello.default.localhost", id="trailing-dot"),
        pytest.param(" hello.default.localhost ", "hello.default.localhost", id="spaces"),
        pytest.param("[::1]:8080", "[::1]", id="ipv6-literal"),
    ],
)
def test_normalize_host(header: str, host: str) -> None:
    assert normalize_host(header) == host


def table() -> RouteTable:
    return RouteTable(
        [
            *service_routes(
                "default",
                "hello",
                [
                    Target("hello-00001", 90, "stable"),
                    Target("hello-00002", 10),
                    Target("hello-00003", 0, "next"),
                ],
            ),
            *service_routes("team", "hello-world", [Target("hello-world-00004", 100)]),
        ]
    )


def test_hosts_cover_services_and_tags() -> None:
    assert table().hosts() == [
        "hello-world.team.localhost",
        "hello.default.localhost",
        "next-hello.default.localhost",
        "stable-hello.default.localhost",
    ]


@pytest.mark.parametrize(
    ("header", "revision"),
    [
        pytest.param("next-hello.default.localhost:8080", "hello-00003", id="zero-percent-tag"),
        pytest.param("stable-hello.default.localhost", "hello-00001", id="tag"),
        pytest.param("HELLO-WORLD.team.localhost:9", "hello-world-00004", id="other-namespace"),
    ],
)
def test_lookup_routes_tag_hosts_to_their_revision(header: str, revision: str) -> None:
    route = table().lookup(header)
    assert route is not None
    assert route.pick(random.Random(0)) is not None
    assert {route.pick(random.Random(i)) for i in range(20)} == {RevisionKey(route.namespace, revision)}


@pytest.mark.parametrize("header", ["hello.localhost", "hello.other.localhost", "", None, "example.com"])
def test_unknown_hosts_have_no_route(header: str | None) -> None:
    assert table().lookup(header) is None


def test_weighted_split_follows_percentages() -> None:
    route = table().lookup("hello.default.localhost")
    assert route is not None
    rng = random.Random(42)
    counts = Counter(route.pick(rng) for _ in range(20000))
    assert set(counts) == {RevisionKey("default", "hello-00001"), RevisionKey("default", "hello-00002")}
    share = counts[RevisionKey("default", "hello-00002")] / 20000
    assert 0.09 < share < 0.11


def test_percentages_of_one_revision_are_summed() -> None:
    [main, *_] = service_routes("ns", "s", [Target("s-1", 50, "a"), Target("s-1", 50, "b")])
    assert [(s.revision.name, s.percent) for s in main.splits] == [("s-1", 100)]


def test_route_with_no_positive_target_picks_nothing() -> None:
    [main, tagged] = service_routes("ns", "s", [Target("s-1", 0, "a")])
    assert main.pick(random.Random(1)) is None
    assert tagged.pick(random.Random(1)) == RevisionKey("ns", "s-1")


def test_urls() -> None:
    assert url("a.b.localhost", 8080) == "http://a.b.localhost:8080"
    assert url("a.b.localhost", 80) == "http://a.b.localhost"


def test_the_table_knows_every_revision_it_routes_to() -> None:
    routes = service_routes(
        "default",
        "hello",
        [Target("hello-00002", 100, None), Target("hello-00001", 0, "old"), Target("hello-00003", 0, None)],
    )
    assert RouteTable(routes).revisions() == {
        RevisionKey("default", "hello-00002"),
        RevisionKey("default", "hello-00001"),
    }
