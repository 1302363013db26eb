"""Typed configuration read from the environment.

Each component declares one frozen dataclass per concern whose fields are made with `setting(...)`; `load`
reads every field and raises one `ConfigError` that lists every missing or invalid variable, so an operator
fixes a broken Deployment in one round trip.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeVar

T = TypeVar("T")
C = TypeVar("C")

_ENV: Final = "serving.env"
_PARSE: Final = "serving.parse"
_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ConfigError(ValueError):
    """One or more environment variables are missing or invalid; `problems` lists them all."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid environment:\n" + "\n".join(f"  - {p}" for p in problems))


def parse_duration(text: str) -> float:
    """Parse `250ms`, `30s`, `1.5m`, `1h` or a bare number of seconds into seconds."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (examples: 250ms, 30s, 1m)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean (use true or false)")


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def parse_non_negative_int(text: str) -> int:
    value = parse_int(text)
    if value < 0:
        raise ValueError(f"{value} is negative; it must be 0 or more")
    return value


def parse_port(text: str) -> int:
    value = parse_int(text)
    if not 0 < value < 65536:
        raise ValueError(f"{value} is not a TCP port (1-65535)")
    return value


def parse_non_negative_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{text!r} must be a finite number, 0 or more")
    return value


def parse_non_negative_duration(text: str) -> float:
    return parse_duration(text)


def parse_str(text: str) -> str:
    return text


def parse_log_format(text: str) -> Literal["text", "json"]:
    """`LOG_FORMAT`: plain `text` or `json` lines, case-insensitive."""
    lowered = text.strip().lower()
    if lowered == "text":
        return "text"
    if lowered == "json":
        return "json"
    raise ValueError(f"{text!r} is not a log format (use text or json)")


def parse_log_level(text: str) -> str:
    """`LOG_LEVEL`: a `logging` level name, upper-cased for `logging.basicConfig`."""
    upper = text.strip().upper()
    if upper not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"{text!r} is not a log level (use debug, info, warning or error)")
    return upper


def setting(env: str, parse: Callable[[str], T], default: T | None = None, *, required: bool = False) -> T:
    """Declare a dataclass field read from the environment variable `env` with `parse`.

    A required setting has no default; a missing one is reported by `load` along with every other problem.
    """
    metadata = {_ENV: env, _PARSE: parse}
    if required:
        return dataclasses.field(metadata=metadata)  # type: ignore[no-any-return]  # dataclass field sentinel
    field: T = dataclasses.field(default=default, metadata=metadata)  # type: ignore[assignment]  # same
    return field


def env_names(cls: type[Any]) -> list[str]:
    """The environment variables a config class reads (for docs and the Helm-values check)."""
    return [f.metadata[_ENV] for f in dataclasses.fields(cls) if _ENV in f.metadata]


def collect(cls: type[C], environ: Mapping[str, str], problems: list[str]) -> C | None:
    """Read `cls` from `environ`, appending each problem to `problems`; None if there was any."""
    values: dict[str, Any] = {}
    before = len(problems)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]  # cls is a dataclass by contract
        if _ENV not in f.metadata:
            continue
        name: str = f.metadata[_ENV]
        parse: Callable[[str], Any] = f.metadata[_PARSE]
        raw = environ.get(name)
        if raw is None or (raw == "" and f.default is dataclasses.MISSING):
            if f.default is dataclasses.MISSING:
                problems.append(f"{name}: required but not set")
            continue
        try:
            values[f.name] = parse(raw)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    if len(problems) > before:
        return None
    return cls(**values)


def load(cls: type[C], environ: Mapping[str, str]) -> C:
    """Read one config class from `environ`, raising `ConfigError` naming every bad variable."""
    problems: list[str] = []
    result = collect(cls, environ, problems)
    if result is None:
        raise ConfigError(problems)
    return result
