"""The autoscaler's contract: everything it reads from its environment, in one frozen dataclass. The
autoscaler loads it (`autoscaler.config`); a platform builds `Settings` and starts it with `to_env()`.

The cluster-wide `config-autoscaler` values travel in one variable, `AUTOSCALER_CONFIG`, as comma-separated
`key=value` pairs with Knative's keys (`stable-window=60s,max-scale-up-rate=10`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from serving.autoscaling import (
    DEFAULT,
    AutoscalerConfig,
    AutoscalingError,
    parse_config,
    parse_go_bool,
    parse_go_float,
    parse_go_int,
)
from serving.config import (
    EnvContract,
    format_bool,
    format_env_duration,
    format_float,
    format_int,
    format_str,
    parse_bool,
    parse_log_format,
    parse_log_level,
    parse_non_negative_duration,
    parse_port,
    parse_str,
    setting,
)
from serving.contract.platform import is_kubernetes, parse_platform_url
from serving.duration import parse_duration


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


_CONFIG_FORMATTERS: Final[dict[Callable[[str], Any], Callable[[Any], str]]] = {
    parse_go_bool: format_bool,
    parse_go_float: format_float,
    parse_go_int: format_int,
    parse_duration: format_env_duration,
    str: format_str,
}
"""The inverse of each parser `AutoscalerConfig` fields are read with."""


def format_autoscaler_config(config: AutoscalerConfig) -> str:
    """`key=value,...` of every setting that differs from Knative's default, in declaration order; the
    inverse of `parse_autoscaler_config` (an empty text is the default config)."""
    pairs: list[str] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value == getattr(DEFAULT, f.name):
            continue
        text = _CONFIG_FORMATTERS[f.metadata["parse"]](value)
        if "," in text or "=" in text:
            raise ValueError(f"{f.metadata['key']}={text}: a value cannot hold ',' or '='")
        pairs.append(f"{f.metadata['key']}={text}")
    return ",".join(pairs)


def parse_positive_duration(text: str) -> float:
    """A duration variable (`serving.config.parse_non_negative_duration`) that must be more than 0."""
    value = parse_non_negative_duration(text)
    if value == 0:
        raise ValueError(f"{text.strip()} must be more than 0")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings(EnvContract):
    """Everything `serving autoscaler` reads from its environment; `to_env()` is that environment."""

    bind_address: str = setting("AUTOSCALER_BIND_ADDRESS", parse_str, "0.0.0.0")
    """Address the stat server listens on: all interfaces in a pod, 127.0.0.1 on one machine."""
    port: int = setting("AUTOSCALER_PORT", parse_port, 8080)
    """Stat server port: the activators' websocket at `/`, `/healthz` and `/metrics` (Knative uses 8080)."""
    platform_url: str = setting(
        "SERVING_PLATFORM_URL", parse_platform_url, required=True, formatter=format_str
    )
    """Base URL of the platform API that lists revisions and pods and applies scale, or `kubernetes`."""
    activator_url: str = setting("ACTIVATOR_URL", parse_optional_http_url, "", formatter=format_str)
    """The activator checked before a revision goes to zero (`K-Network-Probe: activator`); empty means
    the activator is taken to be in the path."""
    config: AutoscalerConfig = setting(  # noqa: RUF009  # setting() declares a field, like dataclasses.field
        "AUTOSCALER_CONFIG", parse_autoscaler_config, DEFAULT, formatter=format_autoscaler_config
    )
    """Cluster-wide config-autoscaler settings as `key=value,...` (Knative keys and defaults)."""
    scrape_timeout: float = setting(
        "AUTOSCALER_SCRAPE_TIMEOUT", parse_positive_duration, 1.0, formatter=format_env_duration
    )
    """Seconds one pod scrape may take; a silent pod is skipped after this, so a tick never stalls on it.
    Shorter than Knative's 3 s so that one dead pod costs at most one 1 s scrape tick."""
    leader_elect: bool = setting("LEADER_ELECT", parse_bool, False)
    """On Kubernetes: take the `serving-autoscaler` Lease before acting and mark this pod as its holder (the
    autoscaler Service selects that mark), so that two replicas can run: one scales, the other waits warm."""
    system_namespace: str = setting("SYSTEM_NAMESPACE", parse_str, "knative-serving")
    """Namespace of the Lease and of this replica's pod."""
    pod_name: str = setting("POD_NAME", parse_str, "")
    """This replica's pod (its identity in the Lease); required with LEADER_ELECT."""
    log_format: Literal["text", "json"] = setting("LOG_FORMAT", parse_log_format, "json")
    """Process log output: JSON lines or plain text."""
    log_level: str = setting("LOG_LEVEL", parse_log_level, "INFO")
    """Lowest level logged: debug, info, warning or error."""

    def problems(self) -> list[str]:
        """Cross-field checks that a single variable's parser cannot make."""
        found: list[str] = []
        if self.leader_elect and not is_kubernetes(self.platform_url):
            found.append("LEADER_ELECT: leader election needs SERVING_PLATFORM_URL=kubernetes (a Lease)")
        if self.leader_elect and not self.pod_name:
            found.append("POD_NAME: required with LEADER_ELECT (the pod to mark as the leader)")
        return found
