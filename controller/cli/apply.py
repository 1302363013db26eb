"""`serving apply -f FILE...`: send Services, ConfigMaps and Secrets to the running `serving up`, as
`kubectl apply` sends them to a cluster. Every document is checked with the same rules and messages as
`serving up`'s own files; when any is invalid nothing changes and the exit code is 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from controller.cli.control import ControlError, add_state_dir, fail, request
from serving.document import DocumentError, read_text

PROG = "serving apply"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=PROG, description="Create or update objects in a running `serving up`.")
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        type=Path,
        metavar="FILE",
        help="YAML file (repeatable)",
    )
    add_state_dir(p)
    args = p.parse_args(argv)
    documents: list[dict[str, str]] = []
    problems: list[str] = []
    for path in args.filename:
        try:
            documents.append({"source": str(path.absolute()), "text": read_text(path)})
        except DocumentError as exc:
            problems.append(exc.problem)
    if problems:
        return fail(PROG, ControlError(problems, 2))
    try:
        answer = request(args.state_dir, "POST", "/v1/apply", {"documents": documents})
    except ControlError as exc:
        return fail(PROG, exc)
    for line in answer["changes"] or ["nothing changed"]:
        print(line)
    sys.stdout.flush()
    return 0
