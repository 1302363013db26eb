"""`serving up` given what it cannot run: a bad flag, file or state dir stops it with one line per problem
and exit code 2 before anything starts; an edit that cannot be read or is over a limit changes nothing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.integration.conftest import (
    MARKER_ENV,
    SERVING,
    ServingUp,
    eventually,
    marked_processes,
    write_app_service,
)

Start = Callable[..., Awaitable[ServingUp]]

NESTED = "a: " + "[" * 300 + "]" * 300 + "\n"
"""About 600 bytes that PyYAML cannot load without a depth limit (RecursionError)."""
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"


def unknown_revision(folder: Path) -> tuple[Path, str]:
    path = write_app_service(folder, "hello")
    path.write_text(path.read_text() + "  traffic:\n    - revisionName: nope\n      percent: 100\n")
    return path, (
        f"  {path}: document 1 (Service/hello): spec.traffic[0].revisionName: revision 'nope' does not "
        "exist in Service default/hello (revisions: hello-00001)"
    )


def nested(folder: Path) -> tuple[Path, str]:
    path = folder / "nested.yaml"
    path.write_text(NESTED)
    return path, f"  {path}: line 1, column 67: invalid YAML: lists and mappings nested deeper than 64 levels"


def too_large(folder: Path) -> tuple[Path, str]:
    path = folder / "big.yaml"
    with path.open("wb") as file:
        file.truncate(50 << 20)  # sparse: no disk used
    return path, f"  {path}: too large: 52428800 bytes, over the limit of 1048576 bytes (1 MiB)"


def binary(folder: Path) -> tuple[Path, str]:
    path = folder / "binary.yaml"
    path.write_bytes(BINARY)
    return path, f"  {path}: line 1: cannot read: not UTF-8 text (byte 0x89 at offset 0: invalid start byte)"


def bad_trigger(folder: Path) -> tuple[Path, str]:
    path = folder / "trigger.yaml"
    path.write_text(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\nspec:\n  broker: default\n"
        "  subscriber:\n    uri: http://example.com/\n  delivery:\n    backoffPolicy: quadratic\n"
    )
    return path, (
        f"  {path}: document 1 (Trigger/t): spec.delivery.backoffPolicy: "
        "'quadratic' is not exponential or linear"
    )


@pytest.mark.parametrize("make", [unknown_revision, nested, too_large, binary, bad_trigger])
async def test_invalid_file_at_start_is_one_line_naming_it_and_exit_2(
    tmp_path: Path, make: Callable[[Path], tuple[Path, str]]
) -> None:
    path, line = make(tmp_path)

    code, err, marker = await run_up([str(path), "--port", "0"], tmp_path)

    assert code == 2, err
    lines = err.splitlines()
    assert lines[0] == "serving up: 1 problem(s); nothing was started:"
    assert len(lines) == 2, err
    assert lines[1].startswith(line), err
    assert_nothing_started(tmp_path, marker)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(
            ["--port", "99999"],
            "serving up: argument --port: 99999 is out of range: must be 1-65535, or 0 for any free port; "
            "see `serving up --help`",
            id="port-99999",
        ),
        pytest.param(
            ["--port=-1"],
            "serving up: argument --port: -1 is out of range: must be 1-65535, or 0 for any free port; "
            "see `serving up --help`",
            id="port-negative",
        ),
        pytest.param(
            ["--state-dir", "/proc/nope"],
            "serving up: cannot use the state dir /proc/nope: No such file or directory; choose another with "
            "--state-dir (or $SERVING_STATE_DIR); nothing was started",
            id="state-dir-under-proc",
        ),
        pytest.param(
            ["--autoscaler-config", "max-scale-up-rate=1e999"],
            "serving up: invalid --autoscaler-config; nothing was started:\n"
            "  max-scale-up-rate=1e999: 1e999 is out of range for a 64-bit float",
            id="autoscaler-config-overflow",
        ),
        pytest.param(
            ["--drain-quiet-period", "300h"],
            "serving up: argument --drain-quiet-period: '300h' is out of range: must be 0s to 1h; "
            "see `serving up --help`",
            id="drain-quiet-period-300h",
        ),
    ],
)
async def test_bad_flag_is_one_line_and_exit_2(tmp_path: Path, flags: list[str], message: str) -> None:
    path = write_app_service(tmp_path, "hello")

    code, err, marker = await run_up([str(path), *flags], tmp_path)

    assert (code, err.rstrip("\n")) == (2, message)
    assert_nothing_started(tmp_path, marker)


async def test_serving_controller_checks_flags_the_same_way(tmp_path: Path) -> None:
    path = write_app_service(tmp_path, "hello")

    code, err, marker = await run_up([str(path), "--port", "99999"], tmp_path, command="controller")

    assert code == 2
    assert err.splitlines() == [
        "serving controller: argument --port: 99999 is out of range: must be 1-65535, or 0 for any free "
        "port; see `serving controller --help`"
    ]
    assert_nothing_started(tmp_path, marker)


async def test_unreadable_edits_are_reported_and_the_old_service_keeps_serving(
    serving_up: Start, tmp_path: Path
) -> None:
    path = write_app_service(tmp_path, "hello")
    valid = path.read_text()
    up = await serving_up([path])
    await expect_v1(up)

    def replace(content: bytes | None = None) -> None:
        """Swap the file as an editor saving it does; None leaves a 50 MB (sparse) file."""
        new = tmp_path / f".{uuid.uuid4().hex}"
        with new.open("wb") as file:
            if content is None:
                file.truncate(50 << 20)
            else:
                file.write(content)
        os.replace(new, path)

    def into_folder() -> None:
        path.unlink()
        path.mkdir()

    def into_fifo() -> None:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.mkfifo(path)  # opened for reading, a named pipe would block until a writer comes

    edits: list[tuple[str, Callable[[], None], str]] = [
        (
            "nested",
            lambda: replace(NESTED.encode()),
            f"{path}: line 1, column 67: invalid YAML: lists and mappings",
        ),
        ("over the size limit", replace, f"{path}: too large: 52428800 bytes"),
        ("binary", lambda: replace(BINARY), f"{path}: line 1: cannot read: not UTF-8 text"),
        ("a folder", into_folder, f"{path}: cannot read: is a directory"),
        ("a named pipe", into_fifo, f"{path}: cannot read: not a regular file"),
        ("deleted", path.unlink, f"{path}: cannot read: No such file or directory"),
    ]
    for what, edit, problem in edits:
        edit()

        async def reported(problem: str = problem) -> bool:
            assert up.proc is not None
            assert up.proc.returncode is None, f"serving up exited:\n{up.output()}"
            return problem in up.output()

        await eventually(reported, 15, f"the edit to {what} was not reported:\n{up.output()}")
        await expect_v1(up)

    path.write_text(valid)
    await eventually(_has(up, "files changed: nothing to apply"), 15, "the restored file was not read back")
    await expect_v1(up)
    assert up.output().count("edit rejected, still running the previous version:") == len(edits)
    assert "Traceback" not in up.output()
    assert await up.stop() == 0


async def run_up(args: list[str], folder: Path, command: str = "up") -> tuple[int, str, str]:
    """Run `serving COMMAND ARGS` to its exit: (exit code, stderr, marker of the processes it started)."""
    marker = uuid.uuid4().hex
    proc = await asyncio.create_subprocess_exec(
        *SERVING,
        command,
        *args,
        cwd=folder,
        env={**os.environ, MARKER_ENV: marker},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"serving {command} {' '.join(args)} did not exit within 30s") from None
    assert proc.returncode is not None
    return proc.returncode, err.decode(), marker


def assert_nothing_started(folder: Path, marker: str) -> None:
    assert marked_processes(marker) == []
    assert not (folder / ".serving" / "logs").exists(), "serving up started, then stopped"
    assert not (folder / ".serving" / "up.json").exists()


async def expect_v1(up: ServingUp) -> None:
    status, body = await up.get("hello")
    assert (status, body.split()[:2]) == (200, ["v1", "hello-00001"]), up.output()


def _has(up: ServingUp, text: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return text in up.output()

    return check
