"""`serving logs -f` across copy-truncate rotation: every line once, in order, the new file from its start."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cli.logs import Follower
from controller.local.runtime.rotation import rotate, rotated

PREFIX = "hello-00001-abcde user-container | "


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.log = tmp_path / "user-container.log"
        self.log.touch()
        self.out = io.StringIO()
        self.follower = Follower(self.out)
        self.written = 0

    def write(self, count: int, partial: str = "") -> None:
        with self.log.open("a") as out:  # O_APPEND, as the pods' processes write
            for _ in range(count):
                out.write(f"line {self.written}\n")
                self.written += 1
            out.write(partial)

    def pump(self) -> list[str]:
        self.follower.pump([(self.log, PREFIX)])
        return self.printed()

    def printed(self) -> list[str]:
        lines = self.out.getvalue().splitlines()
        assert all(line.startswith(PREFIX) for line in lines), lines
        return [line.removeprefix(PREFIX) for line in lines]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = Rig(tmp_path)
    yield made
    made.follower.close()


def numbered(count: int) -> list[str]:
    return [f"line {i}" for i in range(count)]


def test_lines_written_before_a_rotation_are_printed_then_the_new_file_from_its_start(rig: Rig) -> None:
    rig.write(3)
    assert rig.pump() == numbered(3)
    rig.write(2, partial="li")  # not read yet when the log rotates, the last line half written
    rotate(rig.log, max_files=3)
    with rig.log.open("a") as out:
        out.write("ne 5\n")
    rig.written = 6
    rig.write(2)
    assert rig.pump() == numbered(8)
    rig.write(1)
    assert rig.pump() == numbered(9)


def test_several_rotations_between_two_polls(rig: Rig) -> None:
    rig.write(2)
    rotate(rig.log, max_files=5)  # a rotation before the follower started: not printed (kubectl logs)
    rig.write(2)
    assert rig.pump() == ["line 2", "line 3"]
    for _ in range(3):
        rig.write(2)
        rotate(rig.log, max_files=5)
    rig.write(1)
    assert rig.pump() == numbered(11)[2:]


def test_first_rotation_of_a_log_never_rotated_before(rig: Rig) -> None:
    rig.write(2)
    assert rig.pump() == numbered(2)
    rig.write(2)
    rotate(rig.log, max_files=2)
    assert rig.pump() == numbered(4)
    rig.write(2)
    rotate(rig.log, max_files=2)  # max files 2: the only copy is replaced each time
    rig.write(1)
    assert rig.pump() == numbered(7)


def test_poll_in_the_middle_of_a_rotation_waits_for_it(rig: Rig) -> None:
    rig.write(4)
    rotate(rig.log, max_files=3)
    rig.write(3)
    assert rig.pump() == ["line 4", "line 5", "line 6"]
    rig.write(1)
    # The steps of `rotate`, with a poll after each: copy and truncate, `.1` moved up, the copy renamed.
    copy = rig.log.with_name(rig.log.name + ".rotating")
    copy.write_bytes(rig.log.read_bytes())
    assert rig.pump() == ["line 4", "line 5", "line 6"], "a log being copied waits for its `.1`"
    os.truncate(rig.log, 0)
    rig.write(1)
    assert rig.pump() == ["line 4", "line 5", "line 6"], "a shrunk log waits for its `.1`"
    os.replace(rotated(rig.log, 1), rotated(rig.log, 2))
    assert rig.pump() == ["line 4", "line 5", "line 6"], "no `.1` for a moment: wait"
    os.replace(copy, rotated(rig.log, 1))
    assert rig.pump() == ["line 4", "line 5", "line 6", "line 7", "line 8"]


def test_copy_left_behind_by_a_killed_rotation_stops_nothing(rig: Rig) -> None:
    rig.write(2)
    rig.log.with_name(rig.log.name + ".rotating").write_text("line 0\n")
    rig.write(1)
    for _ in range(3):
        assert rig.pump() == []
    assert rig.pump() == numbered(3)
    rig.write(1)
    assert rig.pump() == numbered(4)


def test_truncated_by_someone_else_is_read_from_the_start(rig: Rig) -> None:
    rig.write(5)
    rig.pump()
    os.truncate(rig.log, 0)
    rig.write(1)
    for _ in range(3):
        assert rig.pump() == numbered(5)
    assert rig.pump() == numbered(6)


def test_copies_dropped_before_they_were_read_are_reported(rig: Rig) -> None:
    rig.write(1)
    rotate(rig.log, max_files=3)
    rig.write(1)
    assert rig.pump() == ["line 1"]
    for _ in range(3):  # the copy holding line 2 is dropped by the third rotation
        rig.write(1)
        rotate(rig.log, max_files=3)
    rig.write(1)
    assert rig.pump() == [
        "line 1",
        "[serving logs: rotated faster than it was read; lines skipped]",
        "line 5",
    ]
