from __future__ import annotations

from pathlib import Path

import pytest

from activator.config import ActivatorConfig, load_config
from serving.config import ConfigError, env_names

REQUIRED = {"SERVING_PLATFORM_URL": "http://127.0.0.1:1", "AUTOSCALER_URL": "ws://127.0.0.1:2/"}


def test_defaults_follow_knative() -> None:
    config = load_config(REQUIRED)
    assert config.port == 8012
    assert config.admin_port == 9090
    assert config.queue_depth == 10_000
    assert (config.index, config.count) == (0, 1)
    assert config.drain_timeout == 30.0
    assert config.autoscaler_url == "ws://127.0.0.1:2/"


def test_values_are_parsed() -> None:
    config = load_config(
        {
            **REQUIRED,
            "ACTIVATOR_PORT": "18012",
            "ACTIVATOR_INDEX": "2",
            "ACTIVATOR_COUNT": "3",
            "DRAIN_TIMEOUT": "250ms",
            "POD_NAME": "activator-x",
            "LOG_FORMAT": "text",
        }
    )
    assert (config.port, config.index, config.count) == (18012, 2, 3)
    assert config.drain_timeout == pytest.approx(0.25)
    assert (config.pod_name, config.log_format) == ("activator-x", "text")


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"ACTIVATOR_PORT": "http", "ACTIVATOR_COUNT": "0", "LOG_FORMAT": "xml"})
    text = "\n".join(caught.value.problems)
    for name in ("SERVING_PLATFORM_URL", "AUTOSCALER_URL", "ACTIVATOR_PORT", "ACTIVATOR_COUNT", "LOG_FORMAT"):
        assert name in text


def test_cross_field_problems() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            {**REQUIRED, "ACTIVATOR_INDEX": "3", "ACTIVATOR_COUNT": "3", "ACTIVATOR_ADMIN_PORT": "8012"}
        )
    assert len(caught.value.problems) == 2


def test_urls_must_be_absolute() -> None:
    with pytest.raises(ConfigError, match="AUTOSCALER_URL"):
        load_config({**REQUIRED, "AUTOSCALER_URL": "autoscaler:8080"})


def test_documented_variables() -> None:
    assert set(env_names(ActivatorConfig)) >= {
        "ACTIVATOR_PORT",
        "ACTIVATOR_ADMIN_PORT",
        "SERVING_PLATFORM_URL",
        "AUTOSCALER_URL",
        "ACTIVATOR_INDEX",
        "ACTIVATOR_COUNT",
        "ACTIVATOR_QUEUE_DEPTH",
        "DRAIN_TIMEOUT",
        "POD_NAME",
        "LOG_FORMAT",
    }


def test_every_variable_is_in_the_docs() -> None:
    docs = (Path(__file__).resolve().parents[3] / "docs" / "activator.md").read_text()
    missing = [name for name in env_names(ActivatorConfig) if f"`{name}`" not in docs]
    assert missing == []
