"""docs/packages.md lists every module of the product, one line each, from the module's own docstring.

Regenerate it after adding, moving or re-describing a module: `python -m tests.unit.test_package_map`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("serving", "queueproxy", "activator", "autoscaler", "eventing", "controller", "bench")
MAP = ROOT / "docs" / "packages.md"
HEADER = """# Package map

Every module, one line each: its path and the first sentence of its docstring. Generated from the sources by
`python -m tests.unit.test_package_map` (a test checks it is current). Which package may import which is
enforced by `tests/unit/test_dependency_rule.py`.
"""


def summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(), filename=str(path))) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    end = first.find(". ")
    return first if end == -1 else first[: end + 1]


def render() -> str:
    lines = [HEADER]
    for package in PACKAGES:
        lines.append(f"\n## `{package}/`\n")
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            lines.append(f"- `{rel}`: {summary(path) or '(no docstring)'}")
    return "\n".join(lines) + "\n"


def test_package_map_is_current() -> None:
    assert MAP.read_text() == render(), (
        "docs/packages.md is stale: run `python -m tests.unit.test_package_map`"
    )


def test_every_module_says_what_it_is_for() -> None:
    missing = [
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if not summary(path)
    ]
    assert missing == []


if __name__ == "__main__":
    MAP.write_text(render())
    print(f"wrote {MAP.relative_to(ROOT)}")
