"""Where a running `serving up` keeps its state: the state dir, its `up.json`, and the pod logs.

The state dir is `.serving/` in the current directory (or `--state-dir`, or `$SERVING_STATE_DIR`), so
`serving status` and `serving logs` run from the same folder find the `serving up` running there.
`up.json` names the controller's pid and its control URL; it is removed when `serving up` exits, and a file
left by a killed one is recognised as stale because its pid is gone.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

STATE_FILE: Final = "up.json"
LOG_DIR: Final = "logs"
ENV: Final = "SERVING_STATE_DIR"


def state_dir(flag: str | None) -> Path:
    """The flag, else `$SERVING_STATE_DIR`, else `./.serving` (absolute)."""
    return Path(flag or os.environ.get(ENV) or ".serving").absolute()


def ensure_writable(directory: Path) -> None:
    """Create the state dir if needed and prove a file can be written in it; `OSError` says why not.

    Checked by writing, not with `os.access`: root passes every permission check, yet cannot create
    anything under /proc or on a read-only mount.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory, prefix=".probe-"):
        pass


@dataclass(frozen=True, slots=True, kw_only=True)
class UpState:
    pid: int
    control_url: str
    """Base URL of the controller's status API (`GET /status`)."""
    ingress_url: str
    platform_url: str
    files: list[str]
    started_at: float
    control_token: str = ""
    """What the control API requires (header `Serving-Control-Token`) to change or describe anything: only
    whoever can read this file (mode 0600) can."""


def write(directory: Path, state: UpState) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{STATE_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(asdict(state), indent=2) + "\n")
    tmp.replace(directory / STATE_FILE)


def read(directory: Path) -> UpState | None:
    """The state of a live `serving up` in `directory`; None when there is none (or only a stale file)."""
    try:
        data = json.loads((directory / STATE_FILE).read_text())
        state = UpState(
            pid=int(data["pid"]),
            control_url=str(data["control_url"]),
            ingress_url=str(data["ingress_url"]),
            platform_url=str(data["platform_url"]),
            files=[str(f) for f in data["files"]],
            started_at=float(data["started_at"]),
            control_token=str(data.get("control_token", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if pid_alive(state.pid) else None


def remove(directory: Path, pid: int) -> None:
    """Remove `up.json` if it is still ours."""
    current = read(directory)
    if current is None or current.pid == pid:
        (directory / STATE_FILE).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
