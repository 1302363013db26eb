from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.command import NO_MATPLOTLIB, main
from controller.cli import main as cli_main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["load-test", "--set", "stpes=[1]"], "unknown parameter 'stpes'", id="unknown-parameter"
        ),
        pytest.param(["load-test", "--set", "steps=fast"], "'steps' must be a list", id="wrong-type"),
        pytest.param(
            ["rollout-probe", "--set", "rate=0", "--set", "duration=x"],
            "'duration' must be a number",
            id="every-problem-listed",
        ),
    ],
)
def test_bad_parameters_exit_2_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "run").exists()


def test_every_problem_is_listed_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load-test", "--set", "rate=0", "--set", "nope=1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err
    assert "unknown parameter 'nope'" in err
    assert "'rate' must be a positive number" in err


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["no-such-scenario"], id="unknown-scenario"),
        pytest.param(["load-test", "--rate", "-5"], id="negative-rate"),
        pytest.param(["load-test", "--set", "novalue"], id="set-without-equals"),
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert "usage: serving bench" in capsys.readouterr().err


def test_help_lists_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("dataplane-probe", "scale-from-zero", "load-test", "rollout-probe", "real-traffic"):
        assert name in out


def test_without_matplotlib_one_line_says_how_to_get_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` sees when it is missing
    assert main(["load-test", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [NO_MATPLOTLIB]
    assert "pip install 'serving[bench]'" in err
    assert not (tmp_path / "run").exists()


def test_serving_bench_loads_without_matplotlib(tmp_path: Path) -> None:
    """Nothing `serving bench` imports before its plots needs matplotlib: blocked, the command answers."""
    blocked = (
        "import sys; sys.modules['matplotlib'] = None; "
        "from controller.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", blocked, "bench", "dataplane-probe", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [NO_MATPLOTLIB]
    assert not (tmp_path / "run").exists()
