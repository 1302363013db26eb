from __future__ import annotations

import pytest

from queueproxy.config import load_config
from queueproxy.probe import ProbeSpec
from serving.config import ConfigError

REQUIRED = {
    "SERVING_NAMESPACE": "default",
    "SERVING_CONFIGURATION": "hello",
    "SERVING_REVISION": "hello-00001",
    "SERVING_POD": "hello-00001-abc",
    "SERVING_POD_IP": "10.0.0.7",
}


def test_knative_defaults() -> None:
    config = load_config(REQUIRED)
    assert config.proxy.container_concurrency == 0
    assert config.proxy.user_port == 8080
    assert config.proxy.timeout == 300.0
    assert config.proxy.response_start_timeout == 0.0
    assert config.proxy.idle_timeout == 0.0
    assert config.proxy.readiness_probe == ProbeSpec()
    assert (config.ports.serving, config.ports.admin, config.ports.stats, config.ports.metrics) == (
        8012,
        8022,
        9090,
        9091,
    )
    assert config.drain.quiet_period == 30.0
    assert config.drain.websocket_timeout == 60.0
    assert config.log.request_log is False
    assert config.log.log_format == "text"
    assert config.identity.service == ""


def test_overrides() -> None:
    config = load_config(
        {
            **REQUIRED,
            "CONTAINER_CONCURRENCY": "4",
            "USER_PORT": "9000",
            "REVISION_TIMEOUT_SECONDS": "12",
            "REVISION_RESPONSE_START_TIMEOUT_SECONDS": "2.5",
            "REVISION_IDLE_TIMEOUT_SECONDS": "7",
            "SERVING_READINESS_PROBE": '{"httpGet": {"path": "/ready"}, "periodSeconds": 3}',
            "DRAIN_QUIET_PERIOD": "1500ms",
            "REQUEST_LOG": "true",
            "LOG_FORMAT": "JSON",
            "QUEUE_STATS_PORT": "19090",
        }
    )
    assert config.proxy.container_concurrency == 4
    assert config.proxy.queue_depth == 40
    assert config.proxy.user_port == 9000
    assert config.proxy.timeout == 12.0
    assert config.proxy.response_start_timeout == 2.5
    assert config.proxy.idle_timeout == 7.0
    assert config.proxy.readiness_probe.kind == "http"
    assert config.proxy.readiness_probe.path == "/ready"
    assert config.proxy.readiness_probe.period == 3.0
    assert config.drain.quiet_period == 1.5
    assert config.log.request_log is True
    assert config.log.log_format == "json"
    assert config.ports.stats == 19090


def test_every_bad_variable_is_listed_at_once() -> None:
    env = {
        "SERVING_NAMESPACE": "default",
        "CONTAINER_CONCURRENCY": "-1",
        "USER_PORT": "99999",
        "REVISION_TIMEOUT_SECONDS": "0",
        "SERVING_READINESS_PROBE": "{not json",
        "DRAIN_QUIET_PERIOD": "soon",
        "LOG_FORMAT": "xml",
    }
    with pytest.raises(ConfigError) as info:
        load_config(env)
    text = str(info.value)
    for name in (
        "SERVING_CONFIGURATION",
        "SERVING_REVISION",
        "SERVING_POD",
        "SERVING_POD_IP",
        "CONTAINER_CONCURRENCY",
        "USER_PORT",
        "REVISION_TIMEOUT_SECONDS",
        "SERVING_READINESS_PROBE",
        "DRAIN_QUIET_PERIOD",
        "LOG_FORMAT",
    ):
        assert name in text, name
    assert len(info.value.problems) == 10


def test_ports_must_differ() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({**REQUIRED, "QUEUE_ADMIN_PORT": "9090"})
    assert info.value.problems == [
        "QUEUE_ADMIN_PORT and QUEUE_STATS_PORT: all set to 9090; each server needs its own port"
    ]


def test_user_port_cannot_be_the_serving_port() -> None:
    with pytest.raises(ConfigError, match="USER_PORT and QUEUE_SERVING_PORT"):
        load_config({**REQUIRED, "USER_PORT": "8012"})
