"""Explicit `--ulimit` flags for podman and docker, within this process's hard limits. Container runtimes
default to limits above the hard limits of some hosts, and the OCI runtime then refuses to start the
container (`error setting rlimits`)."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Final

NOFILE_CAP: Final = 1048576
"""The most open files a container gets (the runtimes' own default), even when the host allows more."""
PID_MAX: Final = Path("/proc/sys/kernel/pid_max")


def _pid_max() -> int | None:
    try:
        return int(PID_MAX.read_text().strip())
    except (OSError, ValueError):
        return None


def _bounded(hard: int, cap: int | None) -> int:
    """`hard` lowered to `cap`; -1 (unlimited) when both are unbounded."""
    if hard == resource.RLIM_INFINITY:
        return -1 if cap is None else cap
    return hard if cap is None else min(hard, cap)


def ulimit_args() -> tuple[str, ...]:
    """`--ulimit nofile=N:N --ulimit nproc=M:M`, with N this process's hard RLIMIT_NOFILE (at most 1048576)
    and M its hard RLIMIT_NPROC, at most the kernel's pid_max (when readable)."""
    nofile = _bounded(resource.getrlimit(resource.RLIMIT_NOFILE)[1], NOFILE_CAP)
    nproc = _bounded(resource.getrlimit(resource.RLIMIT_NPROC)[1], _pid_max())
    return ("--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}")
