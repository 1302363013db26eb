"""The eventing component's settings, read from the environment once at start-up
(`serving.contract.eventing`); an invalid environment stops the process with a list of every problem."""

from __future__ import annotations

from collections.abc import Mapping

from serving.config import load_checked
from serving.contract.eventing import EventingConfig

__all__ = ["EventingConfig", "load_config"]


def load_config(environ: Mapping[str, str]) -> EventingConfig:
    return load_checked(EventingConfig, environ)
