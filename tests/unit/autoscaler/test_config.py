from __future__ import annotations

import subprocess
import sys

import pytest

from autoscaler.config import load_settings
from serving.config import ConfigError


def test_defaults_with_only_the_platform_url() -> None:
    settings = load_settings({"SERVING_PLATFORM_URL": "http://127.0.0.1:9000/"})
    assert settings.platform_url == "http://127.0.0.1:9000"
    assert (settings.port, settings.activator_url, settings.scrape_timeout) == (8080, "", 1.0)
    assert settings.config.stable_window == 60


def test_config_autoscaler_settings_in_one_variable() -> None:
    settings = load_settings(
        {
            "SERVING_PLATFORM_URL": "http://127.0.0.1:9000",
            "AUTOSCALER_CONFIG": "stable-window=10s, max-scale-up-rate=2,enable-scale-to-zero=false",
            "ACTIVATOR_URL": "http://127.0.0.1:8012",
        }
    )
    assert settings.config.stable_window == 10
    assert settings.config.max_scale_up_rate == 2
    assert not settings.config.enable_scale_to_zero
    assert settings.activator_url == "http://127.0.0.1:8012"


def test_every_bad_variable_is_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "AUTOSCALER_PORT": "70000",
                "AUTOSCALER_CONFIG": "stable-window=1s,bogus",
                "ACTIVATOR_URL": "ftp://x",
                "LOG_FORMAT": "xml",
            }
        )
    text = str(caught.value)
    for fragment in (
        "SERVING_PLATFORM_URL: required",
        "AUTOSCALER_PORT",
        "stable-window=1s must be between 6s and 1h",
        "'bogus' must look like key=value",
        "ACTIVATOR_URL",
        "LOG_FORMAT",
    ):
        assert fragment in text


def test_the_command_exits_1_on_bad_environment() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", "autoscaler"],
        env={"AUTOSCALER_CONFIG": "max-scale-down-rate=1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "SERVING_PLATFORM_URL: required" in result.stderr
    assert "max-scale-down-rate=1 must be greater than 1" in result.stderr
