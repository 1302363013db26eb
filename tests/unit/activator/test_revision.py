from __future__ import annotations

import pytest

from activator.revision import identify, key_from_host
from serving.platform import RevisionKey


class Headers:
    """Just enough of the engine's header map: case-insensitive `get`."""

    def __init__(self, **values: str) -> None:
        self._values = {k.replace("_", "-").lower(): v for k, v in values.items()}

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._values.get(name.lower(), default)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("hello-00001.default.svc.cluster.local", ("default", "hello-00001"), id="cluster-local"),
        pytest.param("hello-00001.prod.svc.cluster.local:8012", ("prod", "hello-00001"), id="with-port"),
        pytest.param("hello-00001.default.svc", ("default", "hello-00001"), id="short-svc"),
        pytest.param("hello-00001.default.svc.example.com.", ("default", "hello-00001"), id="trailing-dot"),
        pytest.param("hello.default.localhost", None, id="public-local-name"),
        pytest.param("hello-00001.default", None, id="too-short"),
        pytest.param("example.com", None, id="not-a-revision"),
        pytest.param("127.0.0.1:8012", None, id="address"),
        pytest.param(".default.svc.cluster.local", None, id="empty-revision"),
    ],
)
def test_key_from_host(host: str, expected: tuple[str, str] | None) -> None:
    key = key_from_host(host)
    assert key == (RevisionKey(*expected) if expected else None)


def test_headers_win_over_host() -> None:
    headers = Headers(
        Knative_Serving_Revision="hello-00002",
        Knative_Serving_Namespace="blue",
        Host="hello-00001.default.svc.cluster.local",
    )
    assert identify(headers) == RevisionKey("blue", "hello-00002")


def test_host_is_used_when_a_header_is_missing_and_is_case_insensitive() -> None:
    headers = Headers(Knative_Serving_Revision="hello-00002", Host="Hello-00001.Default.svc.cluster.local")
    assert identify(headers) == RevisionKey("default", "hello-00001")


def test_nothing_to_go_on() -> None:
    assert identify(Headers()) is None
    assert identify(Headers(Host="example.com")) is None
