"""The autoscaler's settings, read from the environment in one pass that reports every bad variable at once.

The variables and their parsers are the autoscaler's contract (`serving.contract.autoscaler`).
"""

from __future__ import annotations

from collections.abc import Mapping

from serving.config import load_checked
from serving.contract.autoscaler import (
    Settings,
    format_autoscaler_config,
    parse_autoscaler_config,
    parse_http_url,
    parse_optional_http_url,
    parse_positive_duration,
)

__all__ = [
    "Settings",
    "format_autoscaler_config",
    "load_settings",
    "parse_autoscaler_config",
    "parse_http_url",
    "parse_optional_http_url",
    "parse_positive_duration",
]


def load_settings(environ: Mapping[str, str]) -> Settings:
    return load_checked(Settings, environ)
