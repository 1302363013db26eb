"""The shared component lifecycle, run in real processes: a signal starts the drain and the process exits 0,
a failed root task exits 1 with one line saying why, a bad environment exits listing every problem."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from serving import lifecycle

ROOT = Path(__file__).resolve().parents[3]
CHILD = ("-m", "tests.unit.serving.lifecycle_child")


def child_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHILD_", "LOG_"))}
    return {**env, "PYTHONPATH": str(ROOT), **values}


def run_python(*args: str, **values: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=child_env(**values),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_child(*args: str, **values: str) -> subprocess.CompletedProcess[str]:
    return run_python(*CHILD, *args, **values)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_signal_sets_terminating_and_the_drain_runs_before_a_clean_exit(signum: signal.Signals) -> None:
    with subprocess.Popen(
        [sys.executable, *CHILD],
        env=child_env(CHILD_MODE="wait", CHILD_PORT="8080"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        child.send_signal(signum)
        out, err = child.communicate(timeout=30)
    assert child.returncode == lifecycle.EXIT_OK, err
    assert out.splitlines() == ["draining", "drained"]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("mode", "line"),
    [
        pytest.param("fail", "child stopped: RuntimeError: the stat link broke at once", id="failed-task"),
        pytest.param(
            "listen",
            "child stopped: [Errno 98] main server cannot listen on port 8080: Address already in use",
            id="failed-before-tasks",
        ),
    ],
)
def test_a_failed_root_task_exits_1_with_a_one_line_reason(mode: str, line: str) -> None:
    result = run_child(CHILD_MODE=mode, CHILD_PORT="8080")
    assert result.returncode == lifecycle.EXIT_FAILED == 1
    errors = [text for text in result.stderr.splitlines() if "ERROR" in text]
    assert len(errors) == 1, result.stderr
    assert errors[0].endswith(line)
    assert "Traceback" not in result.stderr


def test_an_invalid_environment_exits_1_listing_every_problem() -> None:
    result = run_child(CHILD_PORT="http")
    assert result.returncode == lifecycle.EXIT_INVALID_ENVIRONMENT == 1
    assert result.stderr.splitlines() == [
        "serving child: invalid environment:",
        "  - CHILD_MODE: required but not set",
        "  - CHILD_PORT: 'http' is not an integer",
    ]
    assert result.stdout == ""


def test_a_component_runs_with_startup_objects_frozen_and_young_collections_spaced() -> None:
    """What a component imported and built before its loop starts is out of the collector's generations, and
    the young generation is collected every `YOUNG_COLLECTION` allocations instead of CPython's 700."""
    result = run_child(CHILD_MODE="collector", CHILD_PORT="8080")
    assert result.returncode == lifecycle.EXIT_OK, result.stderr
    threshold, frozen = map(int, result.stdout.split())
    assert threshold == lifecycle.YOUNG_COLLECTION > 700
    assert frozen > 10_000  # the modules of asyncio, logging and serving at the least


def test_serving_up_settles_the_collector_before_its_loop(tmp_path: Path) -> None:
    """`serving up` is not a `run_component` process: `launch` settles the collector itself. Run in a child
    process with the loop replaced by a probe that reports the collector's settings it would start under."""
    code = "\n".join(
        [
            "import gc, sys",
            "from pathlib import Path",
            "from controller.cli import up",
            "from tests.unit.serving.servicedoc import base_service, write",
            "def report(coroutine):",
            "    coroutine.close()",
            "    print(gc.get_threshold()[0], gc.get_freeze_count(), flush=True)",
            "    return 0",
            "up.uvloop.run = report",
            "folder = Path(sys.argv[1])",
            "service = write(folder, 'hello.yaml', base_service())",
            "argv = [str(service), '--port', '0', '--state-dir', str(folder / 'state')]",
            "prepared = up.prepare(up.parser().parse_args(argv))",
            "assert isinstance(prepared, up.Prepared), prepared",
            "sys.exit(up.launch(prepared, live=False, log_level='info'))",
        ]
    )
    result = run_python("-c", code, str(tmp_path))
    assert result.returncode == 0, result.stderr
    threshold, frozen = map(int, result.stdout.split())
    assert threshold == lifecycle.YOUNG_COLLECTION
    assert frozen > 10_000


@pytest.mark.parametrize(
    ("args", "code", "stream"),
    [
        pytest.param(["--help"], 0, "stdout", id="help"),
        pytest.param(["--port", "1"], 2, "stderr", id="unexpected"),
    ],
)
def test_arguments_print_usage(args: list[str], code: int, stream: str) -> None:
    result = run_child(*args, CHILD_MODE="wait", CHILD_PORT="8080")
    assert result.returncode == code
    assert "usage: child" in getattr(result, stream)


def test_only_entry_points_import_uvloop() -> None:
    """uvloop is a choice of the process entry points (`main.py`), never of shared code."""
    offenders = []
    for path in (ROOT / "serving").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name.split(".")[0] == "uvloop" for name in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


@pytest.mark.parametrize(
    ("error", "text"),
    [
        pytest.param(
            OSError(98, "stats server cannot listen on port 9090"),
            "[Errno 98] stats server cannot listen on port 9090",
            id="os-error-as-is",
        ),
        pytest.param(KeyError("pod"), "KeyError: 'pod'", id="named-type"),
        pytest.param(RuntimeError(), "RuntimeError", id="no-message"),
        pytest.param(
            ExceptionGroup("tasks", [ValueError("a\nb"), OSError("port in use")]),
            "ValueError: a b; port in use",
            id="group-on-one-line",
        ),
    ],
)
def test_reason_is_one_line(error: BaseException, text: str) -> None:
    assert lifecycle.reason(error) == text
