"""Durations in Go's `time.ParseDuration` grammar, the one Knative reads them in: every `config-autoscaler`
key, autoscaling and rollout annotation, component environment variable and command-line flag that takes a
duration is parsed here, so `300ms`, `1.5h`, `1m30s` mean the same wherever they are written.
"""

from __future__ import annotations

import re
from typing import Final

GRAMMAR: Final = "Go duration syntax, e.g. 300ms, 1.5h, 1m30s, -1s or 0; units ns, us, µs, ms, s, m, h"
"""How every duration error describes the accepted forms."""
BARE_SECONDS: Final = "or a bare number of seconds such as 1.5"
"""Appended to `GRAMMAR` where a plain number is also accepted (see `parse_duration`)."""

_NANOS: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 MICRO SIGN, as Go accepts
    "μs": 1_000,  # U+03BC GREEK SMALL LETTER MU, likewise
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
# One `number unit` part; like Go's parser, a unit is every character up to the next digit or period.
_PART_RE: Final = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
_BARE_RE: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")
_LIMIT: Final = 1 << 63
"""Go's `time.Duration` is an int64 of nanoseconds: at most 2^63 - 1 (about 292 years), at least -2^63."""
_MAX_DIGITS: Final = 30
"""Digits of a number beyond any int64 of nanoseconds; longer whole parts overflow, longer fractions are
cut (Go drops the digits it cannot hold too)."""


class DurationError(ValueError):
    """`text` is not a duration; `reason` says what is wrong, the message also shows the accepted forms."""

    def __init__(self, text: str, reason: str, *, bare_seconds: bool = False) -> None:
        self.text = text
        self.reason = reason
        forms = f"{GRAMMAR}; {BARE_SECONDS}" if bare_seconds else GRAMMAR
        super().__init__(f"{text!r} is not a duration: {reason} ({forms})")


def _part_nanos(whole: str, frac: str, unit_nanos: int) -> int | None:
    """Nanoseconds of `whole.frac` units, the fraction truncated per part as Go does; None on overflow."""
    if len(whole) > _MAX_DIGITS:
        return None
    nanos = int(whole or "0") * unit_nanos
    if frac:
        frac = frac[:_MAX_DIGITS]
        nanos += int(frac) * unit_nanos // 10 ** len(frac)
    return nanos if nanos <= _LIMIT else None


def _nanos(text: str, bare_seconds: bool) -> int:
    rest = text + "s" if bare_seconds and _BARE_RE.fullmatch(text) else text
    negative = rest[:1] == "-"
    if rest[:1] in ("+", "-"):
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise DurationError(text, "it is empty" if not text else "a sign alone", bare_seconds=bare_seconds)
    total = 0
    while rest:
        match = _PART_RE.match(rest)
        assert match is not None  # the pattern matches any prefix, possibly empty
        whole, frac, unit = match.group(1), match.group(2), match.group(3)
        if not whole and not frac:
            got = f"{rest[0]!r}" if rest[0] != "." else "a period alone"
            raise DurationError(text, f"expected a number, found {got}", bare_seconds=bare_seconds)
        number = f"{whole}.{frac}" if frac is not None else whole
        if not unit:
            raise DurationError(text, f"missing a unit after {number}", bare_seconds=bare_seconds)
        unit_nanos = _NANOS.get(unit)
        if unit_nanos is None:
            raise DurationError(text, f"unknown unit {unit!r}", bare_seconds=bare_seconds)
        part = _part_nanos(whole, frac or "", unit_nanos)
        if part is None or total + part > _LIMIT:
            raise DurationError(text, "longer than Go's limit of about 292 years", bare_seconds=bare_seconds)
        total += part
        rest = rest[match.end() :]
    if not negative and total == _LIMIT:
        raise DurationError(text, "longer than Go's limit of about 292 years", bare_seconds=bare_seconds)
    return -total if negative else total


def parse_duration_nanos(text: str) -> int:
    """Integer nanoseconds of a Go duration, exactly as `time.ParseDuration` gives them.

    For checks Knative makes on the `time.Duration` itself (whole seconds, bounds), free of float rounding.
    """
    return _nanos(text, bare_seconds=False)


def parse_duration(text: str, *, bare_seconds: bool = False) -> float:
    """Seconds of a Go duration: `300ms`, `1.5h`, `1m30s`, `.5s`, `-1s`, a lone `0`; raises `DurationError`.

    Signs are accepted as Go accepts them; callers refuse negatives where they make no sense, naming their
    key. `bare_seconds` also takes a plain number (`1.5`) as seconds: the documented form of the components'
    environment variables and the flags that feed them, kept from before durations were unified.
    """
    return _nanos(text, bare_seconds) / 1e9


def format_duration(seconds: float) -> str:
    """A compact Go-style rendering for messages and docs: `60s`, `1h`, `1.5s`."""
    if seconds and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
