"""The activator's settings, read from the environment once at start-up.

Every field of the contract (`serving.contract.activator`) maps to one environment variable; an invalid
environment stops the process with a list of every problem.
"""

from __future__ import annotations

from collections.abc import Mapping

from serving.config import load_checked
from serving.contract.activator import ActivatorConfig, parse_positive_int, parse_url

__all__ = ["ActivatorConfig", "load_config", "parse_positive_int", "parse_url"]


def load_config(environ: Mapping[str, str]) -> ActivatorConfig:
    """Read the activator's settings, raising one `ConfigError` that names every bad variable."""
    return load_checked(ActivatorConfig, environ)
