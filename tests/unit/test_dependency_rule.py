"""Components import `serving` and never each other; `serving` imports no component; nothing imports `bench`
(DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("queueproxy", "activator", "autoscaler")
ALL = (*COMPONENTS, "controller")


def imported_top_levels(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("component", COMPONENTS)
def test_components_do_not_import_each_other(component: str) -> None:
    forbidden = set(ALL) - {component}
    offenders = {
        path: sorted(names & forbidden)
        for path, names in imported_top_levels(component).items()
        if names & forbidden
    }
    assert offenders == {}


def test_serving_imports_no_component() -> None:
    offenders = {
        path: sorted(names & set(ALL))
        for path, names in imported_top_levels("serving").items()
        if names & set(ALL)
    }
    assert offenders == {}


@pytest.mark.parametrize("package", ["serving", *ALL])
def test_nothing_imports_bench(package: str) -> None:
    """`serving bench` is reached only by its module's name in `controller/cli.py`, never by an import, so
    no component (nor its image) needs the benchmark code or matplotlib."""
    offenders = {path: ["bench"] for path, names in imported_top_levels(package).items() if "bench" in names}
    assert offenders == {}


def test_rule_sees_every_package() -> None:
    for package in ("serving", *ALL, "bench"):
        assert (ROOT / package / "__init__.py").is_file(), package
