"""`serving logs SERVICE [-f]`: print (or follow) the logs of a Service's local pods.

Pod logs live in `<state dir>/logs/<namespace>/<service>/<pod>/<container>.log`; each line is printed with
its pod and container. `-f` keeps printing as lines are appended and picks up pods started later. The
components' and the controller's own logs are `serving logs activator|autoscaler|controller`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TextIO

from controller import statefile
from controller.podspec import QUEUE_PROXY, USER_CONTAINER

SYSTEM_LOGS: Final = ("activator", "autoscaler", "controller")
POLL: Final = 0.25
"""Seconds between checks for new lines when following."""


@dataclass(slots=True)
class _Follower:
    """Prints lines appended to a set of files, each with its prefix; remembers how far it has read."""

    out: TextIO
    offsets: dict[Path, int] = field(default_factory=dict)
    partial: dict[Path, bytes] = field(default_factory=dict)

    def pump(self, files: list[tuple[Path, str]]) -> None:
        for path, prefix in files:
            try:
                with path.open("rb") as handle:
                    handle.seek(self.offsets.get(path, 0))
                    data = handle.read()
            except OSError:
                continue
            if not data:
                continue
            self.offsets[path] = self.offsets.get(path, 0) + len(data)
            data = self.partial.pop(path, b"") + data
            *lines, rest = data.split(b"\n")
            if rest:
                self.partial[path] = rest
            for line in lines:
                self.out.write(f"{prefix}{line.decode(errors='replace')}\n")
        self.out.flush()


def service_files(
    log_dir: Path, service: str, namespace: str | None, containers: tuple[str, ...]
) -> list[tuple[Path, str]]:
    """(log file, line prefix) of every pod of `service`, oldest pod first."""
    namespaces = [log_dir / namespace] if namespace else sorted(p for p in log_dir.iterdir() if p.is_dir())
    pods = [pod for ns in namespaces for pod in (ns / service).glob("*") if pod.is_dir()]
    pods.sort(key=lambda p: (p.stat().st_ctime, p.name))  # a pod's folder is made when it starts
    files: list[tuple[Path, str]] = []
    for pod in pods:
        for container in containers:
            files.append((pod / f"{container}.log", f"{pod.name} {container} | "))
    return files


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="serving logs", description="Print the logs of a Service's local pods.")
    p.add_argument("service", help=f"Service name, or one of {', '.join(SYSTEM_LOGS)}")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C to stop)")
    p.add_argument("-n", "--namespace", help="namespace of the Service (default: any)")
    p.add_argument(
        "-c",
        "--container",
        choices=(USER_CONTAINER, QUEUE_PROXY, "all"),
        default=USER_CONTAINER,
        help="which container's log (default user-container)",
    )
    p.add_argument(
        "--state-dir", help="state dir of the `serving up` (default: $SERVING_STATE_DIR or ./.serving)"
    )
    args = p.parse_args(argv)
    log_dir = statefile.state_dir(args.state_dir) / statefile.LOG_DIR
    containers = (USER_CONTAINER, QUEUE_PROXY) if args.container == "all" else (args.container,)

    def files() -> list[tuple[Path, str]]:
        if not log_dir.is_dir():
            return []
        found = service_files(log_dir, args.service, args.namespace, containers)
        if not found and args.service in SYSTEM_LOGS:
            found = [(log_dir / f"{args.service}.log", "")]
        return found

    if not files() and not args.follow:
        print(
            f"serving logs: no logs of {args.service!r} under {log_dir} "
            "(is `serving up` running from this folder? see `serving status`)",
            file=sys.stderr,
        )
        return 1
    follower = _Follower(sys.stdout)
    try:
        follower.pump(files())
        while args.follow:
            time.sleep(POLL)
            follower.pump(files())
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `serving logs x | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
