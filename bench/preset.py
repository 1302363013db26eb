"""Scenario presets: the parameters of each scenario, shipped as package data in `bench/presets/<name>.yaml`
(read with importlib.resources), and the check of command-line overrides against them."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

import yaml

PRESETS: Final = "presets"
"""The folder of the presets inside the `bench` package."""


class ParamError(ValueError):
    """A preset or an override is missing, unknown or of the wrong type; `problems` lists every one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def preset_file(name: str, directory: Path | None = None) -> Traversable:
    """The preset of scenario `name`: in `directory` when given, else the one shipped with the package."""
    folder: Traversable = resources.files("bench") / PRESETS if directory is None else directory
    return folder / f"{name}.yaml"


def load_preset(name: str, directory: Path | None = None) -> dict[str, Any]:
    source = preset_file(name, directory)
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ParamError([f"{source}: cannot read the preset ({exc.strerror})"]) from None
    except yaml.YAMLError as exc:
        raise ParamError([f"{source}: not valid YAML: {exc}"]) from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ParamError([f"{source}: a preset is a mapping of parameter names to values"])
    return data


def merge(preset: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The preset with overrides applied; an override must name a preset key and keep its value's type.

    Numbers replace numbers, lists replace lists, strings replace strings; every problem is collected into
    one `ParamError`.
    """
    problems = []
    params = dict(preset)
    for key, value in overrides.items():
        if key not in preset:
            problems.append(f"unknown parameter {key!r} (known: {', '.join(sorted(preset))})")
            continue
        old = preset[key]
        if isinstance(old, bool) or isinstance(value, bool):
            ok = isinstance(old, bool) and isinstance(value, bool)
        elif isinstance(old, int | float):
            ok = isinstance(value, int | float)
        else:
            ok = isinstance(value, type(old))
        if not ok:
            kind = (
                "number" if isinstance(old, int | float) and not isinstance(old, bool) else type(old).__name__
            )
            problems.append(f"parameter {key!r} must be a {kind}, not {value!r}")
            continue
        params[key] = value
    for key in ("rate", "duration"):
        if key in params and not (isinstance(params[key], int | float) and params[key] > 0):
            problems.append(f"parameter {key!r} must be a positive number, not {params[key]!r}")
    if problems:
        raise ParamError(problems)
    return params
