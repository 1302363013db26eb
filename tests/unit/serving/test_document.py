"""Reading Service files within limits: each refusal is one line naming the file, and nothing is exhausted."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from serving.document import MAX_DEPTH, MAX_FILE_BYTES, DocumentError, load, parse, read_text


def nested(depth: int) -> str:
    return "a: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n"  # the mapping is the first level


def laughs(levels: int) -> str:
    """The "billion laughs": each level a list of ten aliases of the one before; 10**levels leaves."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def problem_of(text: str, source: Path) -> str:
    with pytest.raises(DocumentError) as caught:
        parse(text, source)
    assert "\n" not in caught.value.problem
    return caught.value.problem


REFUSED = [
    pytest.param(
        nested(300),
        "line 1, column 67: invalid YAML: lists and mappings nested deeper than 64 levels "
        "(a Service needs at most 12)",
        id="nested-300",
    ),
    pytest.param(
        nested(MAX_DEPTH + 1), "line 1, column 67: invalid YAML: lists and mappings", id="nested-65"
    ),
    pytest.param(
        "".join(f"{'  ' * i}a:\n" for i in range(MAX_DEPTH + 1)),
        "line 65, column 129: invalid YAML: lists and mappings nested deeper than 64 levels",
        id="block-mappings-65",
    ),
    pytest.param(
        "a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n",
        "line 2, column 34: invalid YAML: lists and mappings nested deeper than 64 levels",
        id="depth-through-alias",
    ),
    pytest.param(
        "a: &a [*a]\n",
        "line 1, column 8: invalid YAML: alias *a refers to a node that contains it: "
        "a cycle cannot be an object",
        id="alias-cycle",
    ),
    pytest.param(
        laughs(9),
        "line 6, column 5: invalid YAML: aliases expand the documents past 2097152 bytes "
        "(twice the file size limit)",
        id="billion-laughs",
    ),
    pytest.param(
        f"a: &a {'x' * 100_000}\nb: [{', '.join(['*a'] * 30)}]\n",
        "line 2, column 4: invalid YAML: aliases expand the documents past 2097152 bytes",
        id="aliased-long-string",
    ),
    pytest.param(
        "a: !!int abc\n",
        "line 1, column 4: invalid YAML: cannot read 'abc' as !!int: invalid literal for int() with base 10: "
        "'abc'",
        id="bad-int-tag",
    ),
    pytest.param(
        "a: 2001-02-30\n",
        "line 1, column 4: invalid YAML: cannot read '2001-02-30' as !!timestamp: "
        "day is out of range for month",
        id="impossible-date",
    ),
    pytest.param(
        "a: !!bool maybe\n", "line 1, column 4: invalid YAML: cannot read 'maybe' as !!bool", id="bool"
    ),
    pytest.param(
        "a: !!float ''\n", "line 1, column 4: invalid YAML: cannot read '' as !!float", id="empty-float"
    ),
    pytest.param(
        "a: !!timestamp x\n", "line 1, column 4: invalid YAML: cannot read 'x' as !!timestamp", id="ts"
    ),
    pytest.param(
        f"a: {'1' * 5000}\n",
        "line 1, column 4: invalid YAML: cannot read '1111111111111111111111111111111111111111'... as !!int: "
        "Exceeds the limit (4300 digits)",
        id="int-over-4300-digits",
    ),
    pytest.param(
        "a: b\nc: \x07\n",
        "line 2, column 4: invalid YAML: unacceptable character #x0007: special characters are not allowed",
        id="control-character",
    ),
    pytest.param(
        "#" * (MAX_FILE_BYTES + 1),
        f"too large: {MAX_FILE_BYTES + 1} characters, over the limit of 1048576 bytes (1 MiB) for a Service "
        "file (Kubernetes refuses objects over 1.5 MiB)",
        id="text-over-limit",
    ),
]


@pytest.mark.parametrize(("text", "expected"), REFUSED)
def test_refused_with_one_line_naming_file_and_place(tmp_path: Path, text: str, expected: str) -> None:
    source = tmp_path / "s.yaml"

    assert problem_of(text, source).startswith(f"{source}: {expected}")


def test_64_levels_parse(tmp_path: Path) -> None:
    [doc] = parse(nested(MAX_DEPTH), tmp_path / "s.yaml")

    assert isinstance(doc, dict)
    value, levels = doc["a"], 2  # the document's mapping, then the lists
    while value:
        value, levels = value[0], levels + 1
    assert levels == MAX_DEPTH


def test_aliases_within_the_limit_expand(tmp_path: Path) -> None:
    text = "a: &a {x: [1, 2]}\nb: *a\nc:\n  <<: *a\n  y: 3\n---\nd: [*x]\n".replace("*x", "2")

    assert parse(text, tmp_path / "s.yaml") == [
        {"a": {"x": [1, 2]}, "b": {"x": [1, 2]}, "c": {"x": [1, 2], "y": 3}},
        {"d": [2]},
    ]
    [doc] = parse(laughs(3), tmp_path / "s.yaml")
    assert isinstance(doc, dict)
    assert len(doc["l2"]) == 10
    assert doc["l2"][9][9] == ["lol"] * 10


def test_anchors_do_not_leak_into_the_next_document(tmp_path: Path) -> None:
    problem = problem_of("a: &a 1\n---\nb: *a\n", tmp_path / "s.yaml")

    assert "found undefined alias 'a'" in problem


def test_file_over_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as file:
        file.truncate(50 << 20)  # sparse: 50 MiB that a parse would take minutes on

    started = time.monotonic()
    with pytest.raises(DocumentError) as caught:
        load(path)

    assert caught.value.problem == (
        f"{path}: too large: 52428800 bytes, over the limit of 1048576 bytes (1 MiB) for a Service file "
        "(Kubernetes refuses objects over 1.5 MiB)"
    )
    assert time.monotonic() - started < 1.0


def test_file_at_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"#" * MAX_FILE_BYTES)

    assert len(read_text(path)) == MAX_FILE_BYTES


def unreadable(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "s.yaml"
    if kind == "binary":
        path.write_bytes(b"kind: Service\n\xff\xfe\x00garbage")
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # opened for reading, a named pipe would block until a writer comes
    elif kind == "dangling-symlink":
        path.symlink_to(tmp_path / "gone.yaml")
    return path


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        pytest.param(
            "binary",
            "line 2: cannot read: not UTF-8 text (byte 0xff at offset 14: invalid start byte)",
            id="binary",
        ),
        pytest.param("directory", "cannot read: is a directory", id="directory"),
        pytest.param("fifo", "cannot read: not a regular file", id="fifo"),
        pytest.param("missing", "cannot read: No such file or directory", id="missing"),
        pytest.param("dangling-symlink", "cannot read: No such file or directory", id="dangling-symlink"),
    ],
)
def test_unreadable_file_is_one_line_naming_it(tmp_path: Path, kind: str, expected: str) -> None:
    path = unreadable(tmp_path, kind)

    with pytest.raises(DocumentError) as caught:
        load(path)

    assert caught.value.problem == f"{path}: {expected}"


def test_permission_denied_is_one_line_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the kernel answers a reader without permission (root, which runs these tests, is never refused)."""
    path = tmp_path / "s.yaml"
    path.write_text("a: 1\n")

    def refuse(*args: object, **kwargs: object) -> int:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(os, "open", refuse)  # serving.document opens through os.open

    with pytest.raises(DocumentError) as caught:
        load(path)

    assert caught.value.problem == f"{path}: cannot read: Permission denied"
