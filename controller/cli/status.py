"""`serving status [--json]`: the state of the `serving up` running from this folder (or `--state-dir`).

Asks the controller's control API for its status document; prints it as JSON or as the live view's table.
Exit code 1 when no `serving up` is running there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from controller.local.view import statefile
from controller.local.view.liveview import render

TIMEOUT = 5.0
"""Seconds to wait for the controller's answer."""


def fetch(control_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{control_url}/status", timeout=TIMEOUT) as resp:
        data: dict[str, Any] = json.load(resp)
    return data


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="serving status", description="Show the state of a running `serving up`."
    )
    p.add_argument("--json", action="store_true", help="print the status document as JSON")
    p.add_argument(
        "--state-dir", help="state dir of the `serving up` (default: $SERVING_STATE_DIR or ./.serving)"
    )
    args = p.parse_args(argv)
    directory = statefile.state_dir(args.state_dir)
    state = statefile.read(directory)
    if state is None:
        print(
            f"serving status: no `serving up` is running with state dir {directory} "
            "(start one with `serving up FILE...`, or pass --state-dir)",
            file=sys.stderr,
        )
        return 1
    try:
        report = fetch(state.control_url)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(
            f"serving status: `serving up` (pid {state.pid}) did not answer at {state.control_url}: {exc}",
            file=sys.stderr,
        )
        return 1
    try:
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(f"ingress {report['ingress']}  (serving up pid {state.pid})\n")
            print("\n".join(render(report)).rstrip())
        sys.stdout.flush()
    except BrokenPipeError:  # `serving status | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
