"""Size-based rotation of the local pods' log files, so that a chatty app cannot fill the disk.

The writers are the pods' processes, which hold an O_APPEND descriptor to the file (the launchers open it with
mode "ab") and cannot be asked to reopen it. So rotation is copy-truncate, as logrotate's `copytruncate`:
the content is copied to `<log>.1` (older copies move up to `.2`, ... and the oldest is dropped) and the live
file is truncated in place; the writers' next appends land at its new end, offset 0. The copy is repeated
for what was appended meanwhile until a size check finds nothing new; what is appended between the last check
and the truncation is lost, the caveat of logrotate's `copytruncate` too: microseconds, so nothing or a few
lines of an app printing flat out (more if `serving up` is descheduled right then on a loaded machine).
Lossless would be a pipe between the app and its log, read by `serving up`, as containerd does.

Order, which `serving logs -f` relies on: copy to `<log>.rotating`, truncate, shift `.1`... up, then rename
the copy to `.1`. So `.rotating` exists while the live file may be mid-rotation, and a new `.1` means that
the live file was already truncated.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from serving.config import collect, parse_non_negative_duration, setting

log = logging.getLogger(__name__)

MIB: Final = 1024 * 1024
_CHUNK: Final = 8 * MIB
_CATCH_UP: Final = 8
"""Copy passes at most, each of what was appended during the previous one (usually one or two, the copy being
far faster than a writer); bounded so that a writer printing flat out cannot keep the copy going."""
_SIZE_RE: Final = re.compile(r"^\s*(\d+)\s*(Ki|Mi|Gi|K|M|G)?B?\s*$")
_UNITS: Final = {None: 1, "K": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1024, "Mi": MIB, "Gi": 1024**3}
ROTATING_SUFFIX: Final = ".rotating"


def parse_size(text: str) -> int:
    """`10Mi`, `500Ki`, `1G` or a bare number of bytes (Kubernetes quantity suffixes); at least 1 KiB."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size (examples: 10Mi, 500Ki, 1048576)")
    value = int(match.group(1)) * _UNITS[match.group(2)]
    if value < 1024:
        raise ValueError(f"{text!r} is below the minimum of 1Ki")
    return value


def parse_max_files(text: str) -> int:
    """At least 2 (the live file and one rotated copy), as the kubelet requires of containerLogMaxFiles."""
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None
    if value < 2:
        raise ValueError(f"{value} is below the minimum of 2 (the live file and one rotated copy)")
    return value


def parse_interval(text: str) -> float:
    value = parse_non_negative_duration(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be longer than 0")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class RotationPolicy:
    max_bytes: int = setting("SERVING_LOG_MAX_SIZE", parse_size, 10 * MIB)
    """A pod's log is rotated once it is larger than this, bytes (the kubelet's containerLogMaxSize default,
    10Mi)."""
    max_files: int = setting("SERVING_LOG_MAX_FILES", parse_max_files, 5)
    """Files kept per log, the live one included: `<log>`, `<log>.1` (newest) ... `<log>.4` (the kubelet's
    containerLogMaxFiles default, 5; unlike the kubelet, rotated files are not compressed)."""
    interval: float = setting("SERVING_LOG_CHECK_INTERVAL", parse_interval, 1.0)
    """Seconds between size checks (the kubelet checks every 10 s; 1 s bounds the overshoot of a fast writer
    at the cost of a stat per log per second)."""


def policy_from_environ(environ: Mapping[str, str]) -> tuple[RotationPolicy, list[str]]:
    """The policy the `SERVING_LOG_*` variables set, and a problem per invalid one (then every default)."""
    problems: list[str] = []
    policy = collect(RotationPolicy, environ, problems)
    return policy or RotationPolicy(), problems


def rotated(path: Path, n: int) -> Path:
    """The `n`-th newest rotated copy of `path` (`path.1` is the newest)."""
    return path.with_name(f"{path.name}.{n}")


def rotate(path: Path, max_files: int) -> int:
    """Copy-truncate `path` now (see the module docstring); returns the number of bytes moved to `path.1`.

    Blocking (it copies the whole file); `LogRotator` copies the bulk in a thread instead. Raises OSError
    (FileNotFoundError when the log is gone).
    """
    return finish(path, copy_out(path, 0), max_files)


def _copying(path: Path) -> Path:
    return path.with_name(path.name + ROTATING_SUFFIX)


def copy_out(path: Path, copied: int) -> int:
    """Copy what `path` holds past its first `copied` bytes to `<path>.rotating` (a new one when `copied` is
    0); returns how many bytes it holds then. Blocking, safe in a thread: its descriptors are its own."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if copied == 0 else 0)
    src = os.open(path, os.O_RDONLY)
    try:
        dst = os.open(_copying(path), flags, 0o644)
        try:
            return _copy(src, dst, copied)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy(src: int, dst: int, copied: int) -> int:
    """Copy in passes, each of what was appended during the previous one (they shrink fast, the copy being far
    faster than a writer), until a size check finds nothing new; at most `_CATCH_UP` passes, so that a writer
    cannot keep it going."""
    os.lseek(dst, copied, os.SEEK_SET)
    for _ in range(_CATCH_UP):
        size = os.fstat(src).st_size
        if size <= copied:
            break
        while copied < size:
            sent = os.sendfile(dst, src, copied, min(_CHUNK, size - copied))
            if sent == 0:  # truncated meanwhile by someone else
                return copied
            copied += sent
    return copied


def finish(path: Path, copied: int, max_files: int) -> int:
    """Copy what was appended since `copy_out`, truncate at once (what is appended between the last size
    check and the truncation is lost), then move the copies up and the new one to `.1`; returns the bytes
    moved. Quick unless a writer appended a lot since `copy_out`."""
    src = os.open(path, os.O_RDWR)  # writable: truncated through it, no path lookup in the window
    try:
        dst = os.open(_copying(path), os.O_WRONLY)
        try:
            copied = _copy(src, dst, copied)
            os.ftruncate(src, 0)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    for n in range(max_files - 2, 0, -1):  # .N-1 replaces .N (dropping it), ..., .1 moves to .2
        try:
            os.replace(rotated(path, n), rotated(path, n + 1))
        except FileNotFoundError:
            continue
    os.replace(_copying(path), rotated(path, 1))
    return copied


class LogRotator:
    """Checks a changing set of log files every `policy.interval` and rotates those over the size limit."""

    def __init__(self, policy: RotationPolicy) -> None:
        self.policy = policy

    async def run(self, paths: Callable[[], Iterable[Path]]) -> None:
        """Runs until cancelled; `paths` is asked afresh each time (pods come and go)."""
        while True:
            await asyncio.sleep(self.policy.interval)
            await self.check(paths())

    async def check(self, paths: Iterable[Path]) -> int:
        """Rotate each file in `paths` that is over the limit; returns how many were rotated."""
        count = 0
        for path in paths:
            try:
                if path.stat().st_size <= self.policy.max_bytes:
                    continue
                copied = await asyncio.to_thread(copy_out, path, 0)  # the bulk, off the event loop
                # The rest on the loop thread: no wait for the GIL between the last size check and the
                # truncation, the window in which a writer's lines are lost.
                moved = finish(path, copied, self.policy.max_files)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot rotate log %s: %s", path, exc)
                continue
            log.debug("rotated %s (%d bytes)", path, moved)
            count += 1
        return count
