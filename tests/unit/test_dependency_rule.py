"""The dependency rule (DESIGN.md): components import `serving` and never each other; `serving` imports no
component; `controller.reconcile` imports only `serving`; `controller.ingress` (the router) imports
`reconcile` and `serving`; `controller.local` and `controller.kube` import `ingress`, `reconcile` and
`serving`, never each other; nothing imports `bench`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("queueproxy", "activator", "autoscaler", "eventing")
ALL = (*COMPONENTS, "controller")


def imported_modules(package: str, depth: int = 1) -> dict[str, set[str]]:
    """Per source file under `package` (a path such as `controller/local`), the modules it imports, cut to
    their first `depth` dotted parts (`controller.local.runtime.pod` at depth 2 is `controller.local`)."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(".".join(alias.name.split(".")[:depth]) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(".".join(node.module.split(".")[:depth]))
                if node.module == "controller":  # `from controller import local`
                    names.update(f"controller.{alias.name}" for alias in node.names)
        found[str(path.relative_to(ROOT))] = names
    return found


def imported_top_levels(package: str) -> dict[str, set[str]]:
    return imported_modules(package, 1)


# The fork server's own process runs `serving` subcommands in its children, so it dispatches through the
# command line's table (an entry point, like `__main__`), not through the modules behind it.
_ENTRY_POINTS = {"controller/local/runtime/forkhost.py"}
_CONTROLLER_PARTS = {
    "controller.cli",
    "controller.reconcile",
    "controller.ingress",
    "controller.local",
    "controller.kube",
}


@pytest.mark.parametrize(
    ("package", "allowed_controller_parts"),
    [
        pytest.param("controller/reconcile", {"controller.reconcile"}, id="reconcile-only-serving"),
        pytest.param("controller/ingress", {"controller.ingress", "controller.reconcile"}, id="ingress"),
        pytest.param(
            "controller/local", {"controller.local", "controller.ingress", "controller.reconcile"}, id="local"
        ),
        pytest.param(
            "controller/kube", {"controller.kube", "controller.ingress", "controller.reconcile"}, id="kube"
        ),
    ],
)
def test_platforms_import_reconcile_and_serving_never_each_other(
    package: str, allowed_controller_parts: set[str]
) -> None:
    outside = set(ALL) - {"controller"} | {"bench"}
    offenders = {
        path: sorted(
            {n for n in names if n.split(".")[0] in outside}
            | ({n for n in names if n in _CONTROLLER_PARTS} - allowed_controller_parts)
        )
        for path, names in imported_modules(package, 2).items()
    }
    offenders = {path: names for path, names in offenders.items() if names and path not in _ENTRY_POINTS}
    assert offenders == {}


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
    """`serving bench` is reached only by its module's name in `controller/cli/__init__.py`, never by an
    import, so no component (nor its image) needs the benchmark code or matplotlib."""
    offenders = {path: ["bench"] for path, names in imported_top_levels(package).items() if "bench" in names}
    assert offenders == {}


def test_rule_sees_every_package() -> None:
    for package in (
        "serving",
        *ALL,
        "bench",
        "controller/reconcile",
        "controller/ingress",
        "controller/local",
        "controller/kube",
        "controller/cli",
    ):
        assert (ROOT / package / "__init__.py").is_file(), package
