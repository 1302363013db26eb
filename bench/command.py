"""`serving bench SCENARIO`: run one benchmark scenario and write its output folder."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Final

import aiohttp
import uvloop
import yaml

from bench.context import Context
from bench.preset import ParamError, load_preset, merge
from bench.results import plot
from bench.results.output import REPORT_FILE, write_run
from bench.results.result import RunResult
from bench.scenarios.catalog import scenarios
from bench.system import machine
from bench.system.stack import StackError

log = logging.getLogger(__name__)

NO_MATPLOTLIB: Final = (
    "serving bench: the plots need matplotlib, which is not installed: pip install 'serving[bench]'"
)


def _pair(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} must look like KEY=VALUE (e.g. counts=[1,5])")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not valid YAML ({exc})") from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def parser() -> argparse.ArgumentParser:
    known = scenarios()
    epilog = "scenarios:\n" + "\n".join(f"  {s.name:<16} {s.summary}" for s in known.values())
    p = argparse.ArgumentParser(
        prog="serving bench",
        description="Run a data-plane benchmark scenario on this machine (real processes, loopback only).",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", choices=sorted(known), metavar="SCENARIO", help="one of the scenarios below")
    p.add_argument(
        "--rate", type=_positive, help="requests per second (meaning per scenario; see its preset)"
    )
    p.add_argument(
        "--duration", type=_positive, help="seconds of load (meaning per scenario; see its preset)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=_pair,
        default=[],
        metavar="KEY=VALUE",
        help="override any preset parameter; VALUE is YAML (repeatable)",
    )
    p.add_argument("--out", type=Path, help="output folder (default benchmarks/runs/SCENARIO-TIMESTAMP)")
    p.add_argument("--presets", type=Path, help="folder of the scenario presets (default: the package's)")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    return p


async def _run(scenario: str, params: dict[str, Any], out: Path, command: str, progress: bool) -> RunResult:
    async with aiohttp.ClientSession() as session:
        ctx = Context(
            scenario=scenario, params=params, out=out, command=command, session=session, progress=progress
        )
        return await scenarios()[scenario].run(ctx)


def _problems(exc: ParamError) -> None:
    print(f"serving bench: {len(exc.problems)} problem(s) with the parameters:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def main(argv: list[str]) -> int:
    """Exit codes: 0 every figure met its bar, 1 the run completed but some figure missed its bar, 2 bad
    usage or parameters (or matplotlib missing: the `bench` extra), 3 the system under test failed."""
    args = parser().parse_args(argv)
    if not plot.available():
        print(NO_MATPLOTLIB, file=sys.stderr)
        return 2
    overrides = dict(args.overrides)
    for key in ("rate", "duration"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    try:
        params = merge(load_preset(args.scenario, args.presets), overrides)
    except ParamError as exc:
        _problems(exc)
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = (args.out or Path("benchmarks") / "runs" / f"{args.scenario}-{stamp}").absolute()
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        filename=out / "bench.log",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    print(f"serving bench {args.scenario}: output in {out}", file=sys.stderr)
    started = time.monotonic()
    try:
        command = shlex.join(["serving", "bench", *argv])
        result = uvloop.run(_run(args.scenario, params, out, command, not args.no_progress))
    except ParamError as exc:  # a parameter only its scenario can check (a folder it needs, say)
        _problems(exc)
        return 2
    except StackError as exc:
        print(f"serving bench: the system under test failed: {exc}", file=sys.stderr)
        return 3
    result.duration = time.monotonic() - started
    result.load_after = machine.load_average()
    write_run(result, out)
    for check in result.checks:
        verdict = (
            ("pass" if check.passed else "FAIL") if check.gating else ("info" if check.passed else "over")
        )
        value = "-" if check.value is None else f"{check.value:,.{check.digits}f}"
        print(f"  {verdict}  {check.name}: {value} {check.unit} (bar {check.limit:g})", file=sys.stderr)
    print(f"report: {out / REPORT_FILE}", file=sys.stderr)
    return 0 if result.passed else 1
