"""The benchmark scenarios by name: Knative's performance benchmarks, scaled to a small machine.

Each scenario has a preset of parameters in `benchmarks/scenarios/<name>.yaml`; the command line overrides
`rate` and `duration` (and any other preset key with `--set key=value`). A scenario's `run` starts the
system under test as real processes, drives load, and returns a `RunResult` for the output folder.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from controller.bench import machine
from controller.bench.result import RunResult
from controller.bench.services import SCENARIOS_DIR


class ParamError(ValueError):
    """A preset or an override is missing, unknown or of the wrong type; `problems` lists every one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """What a scenario run gets: its parameters, its output folder and shared plumbing."""

    scenario: str
    params: Mapping[str, Any]
    out: Path
    command: str
    session: aiohttp.ClientSession
    progress: bool = True

    def num(self, key: str) -> float:
        return float(self.params[key])

    def integer(self, key: str) -> int:
        return int(self.params[key])

    def text(self, key: str) -> str:
        return str(self.params[key])

    def flag(self, key: str) -> bool:
        return bool(self.params[key])

    def ints(self, key: str) -> list[int]:
        return [int(v) for v in self.params[key]]

    def new_result(self, title: str) -> RunResult:
        """An empty result for this run, with the machine and its load average taken now."""
        return RunResult(
            scenario=self.scenario,
            title=title,
            command=self.command,
            params=dict(self.params),
            machine=machine.current(),
            load_before=machine.load_average(),
        )


Runner = Callable[[Context], Awaitable[RunResult]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    summary: str
    run: Runner


def _registry() -> dict[str, Scenario]:
    # Imported here: each scenario module imports this one for `Context`.
    from controller.bench import coldstart, dataplane, loadtest, realtraffic, rollout

    return {
        s.name: s
        for s in (
            Scenario(
                name="dataplane-probe",
                summary="latency direct, through the queue-proxy, and through activator + queue-proxy",
                run=dataplane.run,
            ),
            Scenario(
                name="scale-from-zero",
                summary="1, 5 and 25 services woken at once: time to first 200, split into its parts",
                run=coldstart.run,
            ),
            Scenario(
                name="load-test",
                summary="stepped rates from zero with the autoscaler live: latency per step, pods over time",
                run=loadtest.run,
            ),
            Scenario(
                name="rollout-probe",
                summary="constant rate while the Service's template changes: errors and latency",
                run=rollout.run,
            ),
            Scenario(
                name="real-traffic",
                summary="random latency, startup time and payload size across several services: errors",
                run=realtraffic.run,
            ),
        )
    }


def scenarios() -> dict[str, Scenario]:
    return _registry()


def preset_path(name: str, directory: Path = SCENARIOS_DIR) -> Path:
    return directory / f"{name}.yaml"


def load_preset(name: str, directory: Path = SCENARIOS_DIR) -> dict[str, Any]:
    path = preset_path(name, directory)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ParamError([f"{path}: cannot read the preset ({exc.strerror})"]) from None
    except yaml.YAMLError as exc:
        raise ParamError([f"{path}: not valid YAML: {exc}"]) from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ParamError([f"{path}: a preset is a mapping of parameter names to values"])
    return data


def merge(preset: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The preset with overrides applied; an override must name a preset key and keep its value's type.

    Numbers replace numbers, lists replace lists, strings replace strings.
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
