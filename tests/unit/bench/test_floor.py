"""The cold-start floor: copies of an app started at once without the platform, timed to their first 200."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import aiohttp
import pytest

from bench.scenarios import floor
from bench.system import service


def _children() -> set[int]:
    """Live processes whose parent is this one (from /proc: the copies are direct children)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


async def test_copies_are_timed_to_their_first_200_and_stopped(tmp_path: Path) -> None:
    before = _children()
    app = service.benchapp(startup_ms=200)
    async with aiohttp.ClientSession() as session:
        run = await floor.run(app, 3, session, within=30, log_dir=tmp_path)
    assert run.count == 3
    assert len(run.answered) == 3
    assert all(t >= 200 for t in run.answered)  # none answers before its own start-up delay
    assert run.slowest == run.answered[-1]
    assert _children() == before


async def test_a_copy_that_never_answers_counts_as_none_and_is_stopped(tmp_path: Path) -> None:
    before = _children()
    # Listens on nothing and ignores SIGTERM: only SIGKILL of its process group ends it.
    app = service.App(
        command=(
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
        )
    )
    async with aiohttp.ClientSession() as session:
        run = await floor.run(app, 1, session, within=0.3, log_dir=tmp_path)
    assert run.times_ms == [None]
    assert run.slowest is None
    assert _children() == before


async def test_an_app_run_from_its_image_needs_a_container_runtime(tmp_path: Path) -> None:
    before = _children()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match="needs a container runtime"):
            await floor.run(service.image_app("localhost/example:1"), 1, session, 1, tmp_path)
    assert _children() == before
