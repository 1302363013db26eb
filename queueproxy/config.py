"""The queue-proxy's settings: `load_config` reads the contract (`serving.contract.queueproxy`) from the
environment, every concern at once, so that an operator sees every bad variable in one error.
"""

from __future__ import annotations

from collections.abc import Mapping

from serving.config import ConfigError, collect
from serving.contract.queueproxy import (
    Config,
    DrainSettings,
    Identity,
    LogSettings,
    Ports,
    ProxySettings,
    parse_positive_seconds,
)
from serving.contract.tracing import Tracing

__all__ = [
    "Config",
    "DrainSettings",
    "Identity",
    "LogSettings",
    "Ports",
    "ProxySettings",
    "load_config",
    "parse_positive_seconds",
]


def _check_distinct(ports: Ports, user_port: int | None, problems: list[str]) -> None:
    by_port: dict[int, list[str]] = {}
    if user_port is not None:
        by_port[user_port] = ["USER_PORT"]
    for name, port in (
        ("QUEUE_SERVING_PORT", ports.serving),
        ("QUEUE_ADMIN_PORT", ports.admin),
        ("QUEUE_STATS_PORT", ports.stats),
        ("QUEUE_METRICS_PORT", ports.metrics),
    ):
        by_port.setdefault(port, []).append(name)
    problems.extend(
        f"{' and '.join(names)}: all set to {port}; each server needs its own port"
        for port, names in by_port.items()
        if len(names) > 1
    )


def load_config(environ: Mapping[str, str]) -> Config:
    """Read every concern from `environ`; raises `ConfigError` listing all bad variables together."""
    problems: list[str] = []
    identity = collect(Identity, environ, problems)
    proxy = collect(ProxySettings, environ, problems)
    ports = collect(Ports, environ, problems)
    drain = collect(DrainSettings, environ, problems)
    log = collect(LogSettings, environ, problems)
    tracing = collect(Tracing, environ, problems)
    if ports is not None:
        _check_distinct(ports, proxy.user_port if proxy is not None else None, problems)
    if (
        identity is None
        or proxy is None
        or ports is None
        or drain is None
        or log is None
        or tracing is None
        or problems
    ):
        raise ConfigError(problems)
    return Config(identity=identity, proxy=proxy, ports=ports, drain=drain, log=log, tracing=tracing)
