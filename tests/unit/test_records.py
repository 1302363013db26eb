from __future__ import annotations

from pathlib import Path

from tests.records import json_lines


def test_a_line_still_being_appended_is_left_for_the_next_read(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    assert json_lines(path) == []
    path.write_text('{"id": "a"}\n\n{"id": "b"}\n{"id": "c", "pid": 3')
    assert json_lines(path) == [{"id": "a"}, {"id": "b"}]
    with path.open("a") as f:
        f.write("1}\n")
    assert json_lines(path) == [{"id": "a"}, {"id": "b"}, {"id": "c", "pid": 31}]
