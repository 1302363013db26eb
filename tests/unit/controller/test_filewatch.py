from __future__ import annotations

import os
from pathlib import Path

from controller.local.view.filewatch import FileWatcher


def test_edits_removal_and_return_are_noticed_once(tmp_path: Path) -> None:
    path = tmp_path / "service.yaml"
    path.write_text("a: 1\n")
    watcher = FileWatcher([path])
    assert not watcher.changed()
    path.write_text("a: 22\n")
    assert watcher.changed()
    assert not watcher.changed()
    stat = path.stat()
    path.write_text("a: 33\n")  # same size: the modification time tells
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert watcher.changed()
    path.unlink()
    assert watcher.changed()
    assert not watcher.changed()
    path.write_text("a: 1\n")
    assert watcher.changed()
