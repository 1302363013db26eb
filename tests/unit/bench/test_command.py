from __future__ import annotations

from pathlib import Path

import pytest

from controller.bench.command import main
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
