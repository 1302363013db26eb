"""Copy-truncate rotation of pod logs against real writer processes holding an O_APPEND descriptor, as pods
do (their launchers open the log with mode "ab")."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from controller.local.runtime.rotation import (
    ROTATING_SUFFIX,
    LogRotator,
    RotationPolicy,
    policy_from_environ,
    rotate,
    rotated,
)

ECHO = "import sys\nfor line in sys.stdin:\n    sys.stdout.write(line)\n    sys.stdout.flush()\n"
"""Writes each line it reads to its stdout (the log), at once."""

FLOOD = """
import sys, time
for i in range({lines}):
    sys.stdout.write(f"line {{i:07d}} {{'x' * 80}}\\n")
    if i % 500 == 0:
        time.sleep(0.002)
print("done", flush=True)
"""
"""Writes numbered lines through Python's buffered stdout, about 20 MB/s at most."""


async def start_writer(script: str, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:  # what the launchers do
        return await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stdin=asyncio.subprocess.PIPE, stdout=out
        )


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


@pytest.fixture
async def echo(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    log = tmp_path / "user-container.log"
    proc = await start_writer(ECHO, log)
    yield proc, log
    assert proc.stdin is not None
    proc.stdin.close()
    assert await asyncio.wait_for(proc.wait(), 10) == 0


async def say(proc: asyncio.subprocess.Process, log: Path, line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line.encode())
    await proc.stdin.drain()
    await eventually(lambda: log.read_text().endswith(line))


async def test_writer_keeps_appending_at_the_start_of_the_truncated_log(
    echo: tuple[asyncio.subprocess.Process, Path],
) -> None:
    proc, log = echo
    await say(proc, log, "first\n")
    assert rotate(log, max_files=3) == len("first\n")
    assert log.read_bytes() == b""
    assert rotated(log, 1).read_text() == "first\n"
    await say(proc, log, "second\n")
    assert log.read_bytes() == b"second\n", "no hole of NULs where the old content was"
    rotate(log, max_files=3)
    await say(proc, log, "third\n")
    rotate(log, max_files=3)
    assert log.read_bytes() == b""
    assert rotated(log, 1).read_text() == "third\n"
    assert rotated(log, 2).read_text() == "second\n"
    assert not rotated(log, 3).exists(), "max_files 3 keeps the live log and two copies"
    assert not log.with_name(log.name + ROTATING_SUFFIX).exists()


async def test_rotator_bounds_a_flooding_writer_and_loses_no_order(tmp_path: Path) -> None:
    log = tmp_path / "user-container.log"
    policy = RotationPolicy(max_bytes=256 * 1024, max_files=3, interval=0.005)
    rotator = LogRotator(policy)
    lines = 130_000  # ~12 MB
    writer = await start_writer(FLOOD.format(lines=lines), log)
    rotations = 0
    largest = 0
    while writer.returncode is None:
        largest = max(largest, log.stat().st_size)
        rotations += await rotator.check([log, tmp_path / "gone.log"])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(writer.wait(), policy.interval)
    assert writer.returncode == 0
    rotations += await rotator.check([log])

    assert rotations >= 10
    files = [rotated(log, 2), rotated(log, 1), log]
    assert all(f.exists() for f in files)
    assert not rotated(log, 3).exists()
    # Each file stays near the limit: what the writer adds between two checks on a busy machine.
    assert largest <= policy.max_bytes + 2 * 1024 * 1024
    assert all(f.stat().st_size <= policy.max_bytes + 2 * 1024 * 1024 for f in files)
    data = b"".join(f.read_bytes() for f in files)
    assert b"\0" not in data
    text = data.decode()
    assert text.endswith("done\n")
    numbers = [int(n) for n in re.findall(r"^line (\d{7}) x{80}$", text, re.MULTILINE)]
    assert numbers == sorted(set(numbers)), "nothing duplicated or out of order"
    assert numbers[0] > 0, "the oldest lines were dropped with the oldest copy"
    assert numbers[-1] == lines - 1
    # Copy-truncate loses only what is appended between the last copy and the truncation.
    malformed = [line for line in text.splitlines()[:-1] if not re.fullmatch(r"line \d{7} x{80}", line)]
    assert len(malformed) <= rotations


@pytest.mark.parametrize(
    ("environ", "expected", "problems"),
    [
        pytest.param({}, RotationPolicy(), [], id="kubelet-defaults"),
        pytest.param(
            {
                "SERVING_LOG_MAX_SIZE": "1Mi",
                "SERVING_LOG_MAX_FILES": "3",
                "SERVING_LOG_CHECK_INTERVAL": "100ms",
            },
            RotationPolicy(max_bytes=1024 * 1024, max_files=3, interval=0.1),
            [],
            id="set",
        ),
        pytest.param({"SERVING_LOG_MAX_SIZE": "2048"}, RotationPolicy(max_bytes=2048), [], id="bare-bytes"),
        pytest.param(
            {"SERVING_LOG_MAX_SIZE": "10 MB", "SERVING_LOG_MAX_FILES": "1"},
            RotationPolicy(),
            ["SERVING_LOG_MAX_FILES"],
            id="too-few-files",
        ),
        pytest.param(
            {"SERVING_LOG_MAX_SIZE": "lots", "SERVING_LOG_CHECK_INTERVAL": "0s"},
            RotationPolicy(),
            ["SERVING_LOG_MAX_SIZE", "SERVING_LOG_CHECK_INTERVAL"],
            id="invalid",
        ),
    ],
)
def test_policy_from_environ(environ: dict[str, str], expected: RotationPolicy, problems: list[str]) -> None:
    policy, found = policy_from_environ(environ)
    assert policy == expected
    assert [p.split(":")[0] for p in found] == problems
