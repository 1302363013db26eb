from __future__ import annotations

import pytest

from queueproxy.probe import ProbeSpec, parse_probe


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", ProbeSpec(), id="unset-is-tcp-aggressive"),
        pytest.param('{"tcpSocket": {"port": 8080}}', ProbeSpec(port=8080), id="tcp-with-port"),
        pytest.param('{"tcpSocket": {"port": 0}}', ProbeSpec(), id="port-0-is-user-port"),
        pytest.param('{"tcpSocket": {"port": "http"}}', ProbeSpec(), id="named-port-is-user-port"),
        pytest.param(
            '{"tcpSocket": {"host": "10.1.2.3"}, "periodSeconds": 5, "timeoutSeconds": 2}',
            ProbeSpec(host="10.1.2.3", period=5.0, timeout=2.0),
            id="tcp-periodic",
        ),
        pytest.param(
            '{"httpGet": {"path": "healthz", "port": 8080, "scheme": "HTTP",'
            ' "httpHeaders": [{"name": "X-Probe", "value": "yes"}]},'
            ' "successThreshold": 2, "failureThreshold": 5, "periodSeconds": 1}',
            ProbeSpec(
                kind="http",
                port=8080,
                path="/healthz",
                headers=(("X-Probe", "yes"),),
                success_threshold=2,
                failure_threshold=5,
                period=1.0,
            ),
            id="http-full",
        ),
        pytest.param(
            '{"httpGet": {"scheme": "HTTPS"}}', ProbeSpec(kind="http", scheme="https"), id="http-https"
        ),
        pytest.param('{"httpGet": {}}', ProbeSpec(kind="http"), id="http-defaults"),
        pytest.param('{"grpc": {"port": 8080}}', ProbeSpec(kind="grpc", port=8080), id="grpc"),
        pytest.param(
            '{"grpc": {"port": 8080, "service": "helloworld.Greeter"}, "periodSeconds": 2}',
            ProbeSpec(kind="grpc", port=8080, service="helloworld.Greeter", period=2.0),
            id="grpc-service",
        ),
    ],
)
def test_parse_probe(text: str, expected: ProbeSpec) -> None:
    assert parse_probe(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("{", "not valid JSON", id="bad-json"),
        pytest.param("[]", "must be a JSON object", id="not-an-object"),
        pytest.param('{"exec": {"command": ["true"]}}', "exec probes are not supported", id="exec"),
        pytest.param('{"grpc": {"service": 5}}', "grpc.service must be a string", id="grpc-service"),
        pytest.param('{"tcpSocket": {}, "httpGet": {}}', "one action", id="two-actions"),
        pytest.param('{"httpGet": {"scheme": "FTP"}}', "HTTP or HTTPS", id="bad-scheme"),
        pytest.param('{"tcpSocket": {"port": 70000}}', "port must be", id="bad-port"),
        pytest.param('{"periodSeconds": -1}', "periodSeconds must be a number", id="negative-period"),
        pytest.param('{"successThreshold": 1.5}', "successThreshold must be a whole number", id="fraction"),
        pytest.param('{"httpGet": {"httpHeaders": [{"value": "x"}]}}', "non-empty name", id="header-no-name"),
    ],
)
def test_parse_probe_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_probe(text)


def test_every_problem_in_one_error() -> None:
    with pytest.raises(ValueError, match="scheme") as info:
        parse_probe('{"httpGet": {"scheme": "FTP"}, "timeoutSeconds": "x", "failureThreshold": -1}')
    text = str(info.value)
    assert "scheme" in text
    assert "timeoutSeconds" in text
    assert "failureThreshold" in text


@pytest.mark.parametrize(
    ("spec", "aggressive"),
    [
        pytest.param(ProbeSpec(), True, id="period-unset"),
        pytest.param(ProbeSpec(period=10.0), False, id="period-set"),
    ],
)
def test_aggressive_mode(spec: ProbeSpec, aggressive: bool) -> None:
    assert spec.aggressive is aggressive


def test_resolved_port() -> None:
    assert ProbeSpec().resolved_port(8080) == 8080
    assert ProbeSpec(port=9000).resolved_port(8080) == 9000
