"""JSON records a test's app appends to a file, one per line, read while the app may still write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every complete line of `path` parsed; none if it does not exist yet.

    A reader can catch an append half done (a line crossing a page boundary becomes visible a page at a
    time), so a last line without its newline is left for the next read.
    """
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()]
