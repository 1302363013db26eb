"""`serving logs SERVICE [-f]`: print (or follow) the logs of a Service's local pods.

Pod logs live in `<state dir>/logs/<namespace>/<service>/<pod>/<container>.log`; each line is printed with
its pod and container. `-f` keeps printing as lines are appended and picks up pods started later, and follows
a log across its rotation. As `kubectl logs`, only the live file is printed, not its rotated copies (`.1`...).
The components' and the controller's own logs are `serving logs activator|autoscaler|controller`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final, TextIO

from controller.local.runtime.podspec import QUEUE_PROXY, USER_CONTAINER
from controller.local.runtime.rotation import ROTATING_SUFFIX, rotated
from controller.local.view import statefile

SYSTEM_LOGS: Final = ("activator", "autoscaler", "controller")
POLL: Final = 0.25
"""Seconds between checks for new lines when following."""
_SETTLE_POLLS: Final = 4
"""Polls a log may look mid-rotation (being copied, shrunk, its `.1` moved up) before it is taken as it is:
a rotation takes milliseconds, so what lasts a second is something else (a log truncated by hand)."""
_MAX_ROTATED: Final = 1000
"""Rotated copies looked at when catching up after a rotation (the policy keeps far fewer)."""


@dataclass(slots=True, eq=False)
class _Tail:
    """How far one log has been printed, and the `.1` copy beside it then, held open: an open file keeps its
    inode number, so a later copy cannot reuse it and pass for the one already seen."""

    offset: int = 0
    partial: bytes = b""
    copy: BinaryIO | None = None
    unsettled: int = 0
    """Consecutive polls that found the log mid-rotation."""

    @property
    def copy_inode(self) -> int | None:
        return None if self.copy is None else os.fstat(self.copy.fileno()).st_ino

    def hold(self, copy: BinaryIO | None) -> None:
        if self.copy is not None:
            self.copy.close()
        self.copy = copy


def _open(path: Path) -> BinaryIO | None:
    try:
        return path.open("rb")
    except OSError:
        return None


def _copying(path: Path) -> bool:
    return path.with_name(path.name + ROTATING_SUFFIX).exists()


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _read(path: Path, offset: int, inode: int | None = None) -> bytes | None:
    """The bytes of `path` from `offset`; None when it cannot be read or is no longer the file `inode`."""
    try:
        with path.open("rb") as handle:
            if inode is not None and os.fstat(handle.fileno()).st_ino != inode:
                return None
            handle.seek(offset)
            return handle.read()
    except OSError:
        return None


@dataclass(slots=True)
class Follower:
    """Prints lines appended to a set of files, each with its prefix; remembers how far it has read.

    Follows copy-truncate rotation (`controller.local.runtime.rotation`): a new `<log>.1` means the log was
    truncated; the lines written since the last poll and before the truncation are read from the rotated
    copies, and the log is then read from its start, so nothing is printed twice or skipped (but for the
    rotation's own window, and a notice when the copies it needs were already dropped). `close` when done.
    """

    out: TextIO
    tails: dict[Path, _Tail] = field(default_factory=dict)

    def close(self) -> None:
        for tail in self.tails.values():
            tail.hold(None)

    def pump(self, files: list[tuple[Path, str]]) -> None:
        for path, prefix in files:
            tail = self.tails.get(path)
            if tail is None:
                tail = self.tails[path] = _Tail(copy=_open(rotated(path, 1)))
            data = self._new_bytes(path, tail, prefix)
            if data:
                data = tail.partial + data
                *lines, tail.partial = data.split(b"\n")
                for line in lines:
                    self.out.write(f"{prefix}{line.decode(errors='replace')}\n")
        self.out.flush()

    def _new_bytes(self, path: Path, tail: _Tail, prefix: str) -> bytes:
        missed = b""
        newest = _open(rotated(path, 1))
        if newest is not None and os.fstat(newest.fileno()).st_ino != tail.copy_inode:
            missed = self._missed(path, tail, prefix)  # rotated (so truncated) since the last poll
            tail.hold(newest)
            tail.offset = tail.unsettled = 0
        else:
            if newest is not None:
                newest.close()
            if self._rotating(path, tail):
                return b""
        data = _read(path, tail.offset) or b""
        if data and self._moved(path, tail):  # a rotation began while reading: read again after it
            return missed
        tail.offset += len(data)
        return missed + data

    @staticmethod
    def _rotating(path: Path, tail: _Tail) -> bool:
        """Whether `path` is mid-rotation (being copied, truncated, its `.1` moved up): wait for the new `.1`.
        What still looks so after a few polls was not our rotation (a copy left by a killed `serving up`, a
        log truncated or copies removed by hand) and is taken as it is."""
        try:
            size = path.stat().st_size
        except OSError:
            size = tail.offset
        gone = tail.copy is not None and not rotated(path, 1).exists()
        if not (gone or size < tail.offset or _copying(path)):
            tail.unsettled = 0
            return False
        tail.unsettled += 1
        if tail.unsettled < _SETTLE_POLLS:
            return True
        if gone:
            tail.hold(None)
        if size < tail.offset:
            tail.offset = 0
        return False

    @staticmethod
    def _moved(path: Path, tail: _Tail) -> bool:
        """Whether a rotation began (or ended) since this poll looked: what was just read may be the new
        file's, read from the old offset."""
        if tail.unsettled < _SETTLE_POLLS and _copying(path):
            return True
        return _inode(rotated(path, 1)) != tail.copy_inode

    def _missed(self, path: Path, tail: _Tail, prefix: str) -> bytes:
        """What was appended to `path` after `tail.offset` before its last rotations, from the copies: the
        copy of the log as it was being read, then every newer copy."""
        inodes: list[int] = []
        for n in range(1, _MAX_ROTATED + 1):
            inode = _inode(rotated(path, n))
            if inode is None:
                break
            inodes.append(inode)
        seen = tail.copy_inode
        if seen is None:  # never rotated before: the oldest copy is the log as it was read
            ours = len(inodes)
        elif seen in inodes:  # the `.1` seen last moved up: the copy before it is ours
            ours = inodes.index(seen)
        elif len(inodes) == 1:  # one copy kept (max files 2): the previous one was dropped by this rotation
            ours = 1
        else:
            self.out.write(f"{prefix}[serving logs: rotated faster than it was read; lines skipped]\n")
            return b""
        chunks: list[bytes] = []
        for n in range(ours, 0, -1):
            chunk = _read(rotated(path, n), tail.offset if n == ours else 0, inodes[n - 1])
            if chunk is None:
                self.out.write(f"{prefix}[serving logs: a rotated copy went away; lines skipped]\n")
                break
            chunks.append(chunk)
        return b"".join(chunks)


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
    follower = Follower(sys.stdout)
    try:
        follower.pump(files())
        while args.follow:
            time.sleep(POLL)
            follower.pump(files())
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `serving logs x | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        follower.close()
    return 0
