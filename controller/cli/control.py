"""The client side of a running `serving up`'s control API, shared by `serving apply`, `delete`, `list` and
`describe`: find the `serving up` of this folder (or `--state-dir`), send one request, and turn its answer or
its absence into an exit code and lines on stderr."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any, Final

from controller.local.controlserver import TOKEN_HEADER
from controller.local.view import statefile

TIMEOUT: Final = 120.0
"""Seconds to wait for an answer: an apply may find a container runtime first (a few seconds)."""


class ControlError(Exception):
    """The request failed; `problems` are the lines to print, `code` the exit code (1, or 2 for bad input)."""

    def __init__(self, problems: list[str], code: int = 1) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.code = code


def add_state_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir", help="state dir of the `serving up` (default: $SERVING_STATE_DIR or ./.serving)"
    )


def request(state_dir: str | None, method: str, path: str, body: object = None) -> Any:
    """The JSON answer of `method path` on the running `serving up`; raises `ControlError`."""
    directory = statefile.state_dir(state_dir)
    state = statefile.read(directory)
    if state is None:
        raise ControlError(
            [
                f"no `serving up` is running with state dir {directory} (start one with "
                "`serving up [FILE...]`, or pass --state-dir)"
            ]
        )
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{state.control_url}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    req.add_header(TOKEN_HEADER, state.control_token)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            problems = [str(p) for p in json.load(exc)["problems"]]
        except (ValueError, KeyError, TypeError):
            problems = [f"`serving up` answered {exc.code} {exc.reason}"]
        raise ControlError(problems, 2 if exc.code in (400, 422) else 1) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ControlError(
            [f"`serving up` (pid {state.pid}) did not answer at {state.control_url}: {exc}"]
        ) from None


def fail(prog: str, error: ControlError) -> int:
    for problem in error.problems:
        print(f"{prog}: {problem}", file=sys.stderr)
    return error.code
