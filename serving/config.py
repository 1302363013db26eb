"""Typed configuration read from the environment.

Each component declares one frozen dataclass per concern whose fields are made with `setting(...)`; `load`
reads every field and raises one `ConfigError` that lists every missing or invalid variable, so an operator
fixes a broken Deployment in one round trip. Each setting also carries the inverse of its parser, so a
platform that starts the component renders the same dataclass back to variables (`EnvContract.to_env`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, Protocol, TypeVar

from serving.duration import format_duration, parse_duration

T = TypeVar("T")
C = TypeVar("C")

_ENV: Final = "serving.env"
_PARSE: Final = "serving.parse"
_FORMAT: Final = "serving.format"


class ConfigError(ValueError):
    """One or more environment variables are missing or invalid; `problems` lists them all."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid environment:\n" + "\n".join(f"  - {p}" for p in problems))


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
    """A duration variable (`250ms`, `1m30s`, `0`; Go's grammar, `serving.duration`), 0 or more, in seconds.

    A bare number is seconds (`1.5`), the documented form of these variables before durations were unified;
    surrounding blanks are ignored, as for every other variable.
    """
    value = parse_duration(text.strip(), bare_seconds=True)
    if value < 0:
        raise ValueError(f"{text.strip()} is negative; it must be 0 or more")
    return value


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


def format_bool(value: bool) -> str:
    return "true" if value else "false"


def format_int(value: int) -> str:
    return str(value)


_EXACT_INT_FLOAT: Final = 2.0**53
"""Floats below this in magnitude that are whole numbers print as integers without losing a digit."""


def format_float(value: float) -> str:
    """Shortest text `float()` reads back to the same value; whole numbers without `.0` (Knative writes
    `REVISION_TIMEOUT_SECONDS` as an integer)."""
    if value.is_integer() and abs(value) < _EXACT_INT_FLOAT:
        return str(int(value))
    return repr(value)


def format_env_duration(seconds: float) -> str:
    """A duration that `parse_duration` reads back to exactly `seconds`: `serving.duration.format_duration`'s
    compact form (`30s`, `1m`, `1.5s`) when it is exact, else whole nanoseconds as decimal seconds.

    Exact for every value the duration parsers produce (integer nanoseconds divided by 1e9).
    """
    text = format_duration(seconds)
    try:
        if parse_duration(text) == seconds:
            return text
    except ValueError:
        pass  # `%g` wrote an exponent (`1e+06s`), which Go's grammar has not
    nanos = round(seconds * 1e9)
    # Past about 10^6 s a float's spacing nears 1 ns, so the product may be a nanosecond off the one that
    # parses back to `seconds`: take the neighbour that does (int / float division is correctly rounded).
    exact = (n for n in (nanos, nanos - 1, nanos + 1, nanos - 2, nanos + 2) if n / 1e9 == seconds)
    nanos = next(exact, nanos)
    whole, frac = divmod(abs(nanos), 1_000_000_000)
    decimals = f"{whole}.{frac:09d}".rstrip("0").rstrip(".")
    return f"{'-' if nanos < 0 else ''}{decimals}s"


def format_str(value: str) -> str:
    return value


_FORMATTERS: Final[dict[Callable[[str], Any], Callable[[Any], str]]] = {
    parse_bool: format_bool,
    parse_int: format_int,
    parse_non_negative_int: format_int,
    parse_port: format_int,
    parse_non_negative_float: format_float,
    parse_non_negative_duration: format_env_duration,
    parse_str: format_str,
    parse_log_format: format_str,
    parse_log_level: format_str,
}
"""The inverse of each shared parser, used when a `setting` names none."""


def setting(
    env: str,
    parse: Callable[[str], T],
    default: T | None = None,
    *,
    required: bool = False,
    formatter: Callable[[T], str] | None = None,
) -> T:
    """Declare a dataclass field read from the environment variable `env` with `parse`.

    A required setting has no default; a missing one is reported by `load` along with every other problem.
    `formatter` renders a value back to the variable's text so that `parse(formatter(v)) == v`; the shared
    parsers above have one by default. A setting with neither is only read: `render_env` refuses it.
    """
    metadata = {_ENV: env, _PARSE: parse, _FORMAT: formatter or _FORMATTERS.get(parse)}
    if required:
        return dataclasses.field(metadata=metadata)  # type: ignore[no-any-return]  # dataclass field sentinel
    field: T = dataclasses.field(default=default, metadata=metadata)  # type: ignore[assignment]  # same
    return field


def env_names(cls: type[Any]) -> list[str]:
    """The environment variables a config class reads (for docs and the checks of what sets them)."""
    return [f.metadata[_ENV] for f in dataclasses.fields(cls) if _ENV in f.metadata]


def render_env(obj: object) -> dict[str, str]:
    """Every setting of the config dataclass `obj` as environment variables, nested concerns included.

    The inverse of `load`: `load(type(obj), render_env(obj)) == obj` for every value the parsers produce.
    """
    env: dict[str, str] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]  # obj is a dataclass instance by contract
        value = getattr(obj, f.name)
        if _ENV in f.metadata:
            formatter: Callable[[Any], str] | None = f.metadata[_FORMAT]
            if formatter is None:
                raise TypeError(f"{f.metadata[_ENV]}: no formatter; declare the setting with formatter=")
            env[f.metadata[_ENV]] = formatter(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            env.update(render_env(value))
    return env


class EnvContract:
    """Base of a config dataclass that a platform renders for the component it starts (`serving.contract`).

    Slot-free, so that slotted dataclasses deriving from it stay slotted.
    """

    __slots__ = ()

    def to_env(self) -> dict[str, str]:
        """Every field as the environment variable the component reads it from (see `render_env`)."""
        return render_env(self)


def collect(cls: type[C], environ: Mapping[str, str], problems: list[str]) -> C | None:
    """Read `cls` from `environ`, appending each problem to `problems`; None if there was any. Nested concerns
    that have a default instance are read too; those without one are the caller's to collect."""
    values: dict[str, Any] = {}
    before = len(problems)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]  # cls is a dataclass by contract
        if _ENV not in f.metadata:
            # A nested concern with a default (e.g. `tracing: Tracing = Tracing()`) is read from the same
            # environment, its problems reported with the others.
            if dataclasses.is_dataclass(f.default) and not isinstance(f.default, type):
                nested = collect(type(f.default), environ, problems)
                if nested is not None:
                    values[f.name] = nested
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


class Checked(Protocol):
    def problems(self) -> list[str]:
        """Cross-field checks that a single variable's parser cannot make."""
        ...


K = TypeVar("K", bound=Checked)


def load_checked(cls: type[K], environ: Mapping[str, str]) -> K:
    """`load`, then the config's own cross-field `problems()`: a component's loader, which stops the process
    with every problem listed."""
    problems: list[str] = []
    result = collect(cls, environ, problems)
    if result is not None:
        problems += result.problems()
    if result is None or problems:
        raise ConfigError(problems)
    return result
