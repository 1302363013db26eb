"""The autoscaler's settings, read from the environment in one pass that reports every bad variable at once.

The cluster-wide `config-autoscaler` values travel in one variable, `AUTOSCALER_CONFIG`, as comma-separated
`key=value` pairs with Knative's keys (`stable-window=60s,max-scale-up-rate=10`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from serving.autoscaling import DEFAULT, AutoscalerConfig, AutoscalingError, parse_config
from serving.config import (
    ConfigError,
    collect,
    parse_duration,
    parse_log_format,
    parse_log_level,
    parse_port,
    parse_str,
    setting,
)


def parse_http_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{text!r} is not an http(s) URL")
    return text.strip().rstrip("/")


def parse_optional_http_url(text: str) -> str:
    return parse_http_url(text) if text.strip() else ""


def parse_autoscaler_config(text: str) -> AutoscalerConfig:
    """`key=value,key=value` with config-autoscaler keys; every problem is reported."""
    pairs: dict[str, str] = {}
    problems: list[str] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            problems.append(f"{item!r} must look like key=value")
            continue
        pairs[key.strip()] = value.strip()
    try:
        config = parse_config(pairs)
    except AutoscalingError as exc:
        problems += exc.problems
        config = DEFAULT
    if problems:
        raise ValueError("; ".join(problems))
    return config


def parse_positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be more than 0")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything `serving autoscaler` reads from its environment."""

    bind_address: str = setting("AUTOSCALER_BIND_ADDRESS", parse_str, "0.0.0.0")
    """Address the stat server listens on: all interfaces in a pod, 127.0.0.1 on one machine."""
    port: int = setting("AUTOSCALER_PORT", parse_port, 8080)
    """Stat server port: the activators' websocket at `/`, `/healthz` and `/metrics` (Knative uses 8080)."""
    platform_url: str = setting("SERVING_PLATFORM_URL", parse_http_url, required=True)
    """Base URL of the platform API that lists revisions and pods and applies scale."""
    activator_url: str = setting("ACTIVATOR_URL", parse_optional_http_url, "")
    """The activator checked before a revision goes to zero (`K-Network-Probe: activator`); empty means
    the activator is taken to be in the path."""
    config: AutoscalerConfig = setting(  # noqa: RUF009  # setting() declares a field, like dataclasses.field
        "AUTOSCALER_CONFIG", parse_autoscaler_config, DEFAULT
    )
    """Cluster-wide config-autoscaler settings as `key=value,...` (Knative keys and defaults)."""
    scrape_timeout: float = setting("AUTOSCALER_SCRAPE_TIMEOUT", parse_positive_duration, 1.0)
    """Seconds one pod scrape may take; a silent pod is skipped after this, so a tick never stalls on it.
    Shorter than Knative's 3 s so that one dead pod costs at most one 1 s scrape tick."""
    log_format: Literal["text", "json"] = setting("LOG_FORMAT", parse_log_format, "json")
    """Process log output: JSON lines or plain text."""
    log_level: str = setting("LOG_LEVEL", parse_log_level, "INFO")
    """Lowest level logged: debug, info, warning or error."""


def load_settings(environ: Mapping[str, str]) -> Settings:
    problems: list[str] = []
    settings = collect(Settings, environ, problems)
    if settings is None:
        raise ConfigError(problems)
    return settings
