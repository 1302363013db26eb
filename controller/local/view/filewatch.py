"""Notices edits of the Service files by polling their modification time and size (once a second in `up`).

Polling needs no platform-specific notification API and copes with editors that replace a file on save.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

Stamp = tuple[int, int] | None
"""(mtime in ns, size), or None while the file is missing."""


def stamp(path: Path) -> Stamp:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size)


class FileWatcher:
    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self._stamps = [stamp(p) for p in self.paths]

    def changed(self) -> bool:
        """Whether any file changed since the last call (or since creation)."""
        current = [stamp(p) for p in self.paths]
        if current == self._stamps:
            return False
        self._stamps = current
        return True
