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


def cluster_table() -> RouteTable:
    targets = [Target("hello-00001", 90, "stable"), Target("hello-00002", 10)]
    return RouteTable(service_routes("default", "hello", targets, "example.com", "cluster.local"))


@pytest.mark.parametrize(
    ("header", "host"),
    [
        pytest.param("hello.default.svc.cluster.local", "hello.default.example.com", id="full"),
        pytest.param("hello.default.svc.cluster.local:80", "hello.default.example.com", id="full-with-port"),
        pytest.param("hello.default.svc", "hello.default.example.com", id="svc"),
        pytest.param("Hello.Default:8080", "hello.default.example.com", id="namespace-only"),
        pytest.param("stable-hello.default.svc.cluster.local", "stable-hello.default.example.com", id="tag"),
        pytest.param("stable-hello.default.svc:80", "stable-hello.default.example.com", id="tag-svc"),
        pytest.param("stable-hello.default", "stable-hello.default.example.com", id="tag-namespace-only"),
        pytest.param("hello.default.example.com", "hello.default.example.com", id="public"),
    ],
)
def test_cluster_local_names_route_as_the_public_host(header: str, host: str) -> None:
    route = cluster_table().lookup(header)
    assert route is not None
    assert route.host == host


def test_cluster_local_names_keep_the_split_of_the_public_host() -> None:
    route = cluster_table().lookup("hello.default.svc.cluster.local")
    assert route is not None
    assert [(s.revision.name, s.percent) for s in route.splits] == [("hello-00001", 90), ("hello-00002", 10)]
    tagged = cluster_table().lookup("stable-hello.default")
    assert tagged is not None
    assert {tagged.pick(random.Random(i)) for i in range(20)} == {RevisionKey("default", "hello-00001")}


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("hello", id="bare-name"),
        pytest.param("hello.default.svc.other.local", id="other-cluster-domain"),
        pytest.param("hello.team.svc.cluster.local", id="other-namespace"),
        pytest.param("next-hello.default.svc.cluster.local", id="unknown-tag"),
    ],
)
def test_other_in_cluster_names_are_unknown(header: str) -> None:
    assert cluster_table().lookup(header) is None


def test_known_hosts_list_only_public_hosts() -> None:
    assert cluster_table().hosts() == ["hello.default.example.com", "stable-hello.default.example.com"]


def test_without_a_cluster_domain_there_are_no_cluster_local_names() -> None:
    assert table().lookup("hello.default.svc.cluster.local") is None
    assert table().lookup("hello.default") is None


def test_a_domain_that_is_the_cluster_local_suffix_claims_each_name_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    routes = service_routes(
        "default", "hello", [Target("hello-1", 100)], "svc.cluster.local", "cluster.local"
    )
    table = RouteTable(routes)
    assert table.hosts() == ["hello.default.svc.cluster.local"]
    assert table.lookup("hello.default") is not None
    assert "claimed twice" not in caplog.text


def test_a_name_two_routes_claim_stays_with_the_first(caplog: pytest.LogCaptureFixture) -> None:
    tagged = service_routes(
        "default", "hello", [Target("hello-1", 100, "old")], "example.com", "cluster.local"
    )
    other = service_routes(
        "default", "old-hello", [Target("old-hello-1", 100)], "example.com", "cluster.local"
    )
    route = RouteTable([*tagged, *other]).lookup("old-hello.default.svc.cluster.local")
    assert route is not None
    assert route.splits[0].revision == RevisionKey("default", "hello-1")
    assert "old-hello.default.example.com is claimed twice" in caplog.text


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
