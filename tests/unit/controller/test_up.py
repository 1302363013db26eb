"""`serving up`'s checks before anything starts: a bad flag, file or state dir is one line and exit code 2."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from controller.cli.up import Prepared, parser, prepare
from tests.unit.serving.servicedoc import base_service, with_field, write

USAGE = "; see `serving up --help`"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(
            "--port 99999",
            "argument --port: 99999 is out of range: must be 1-65535, or 0 for any free port",
            id="port-too-high",
        ),
        pytest.param(
            "--port=-1",
            "argument --port: -1 is out of range: must be 1-65535, or 0 for any free port",
            id="port-negative",
        ),
        pytest.param("--port http", "argument --port: 'http' is not a port number", id="port-not-a-number"),
        pytest.param(
            "--drain-quiet-period 300h",
            "argument --drain-quiet-period: '300h' is out of range: must be 0s to 1h",
            id="drain-too-long",
        ),
        pytest.param("--drain-quiet-period=-1s", "argument --drain-quiet-period: ", id="drain-negative"),
        pytest.param(
            "--shutdown-grace soon", "argument --shutdown-grace: 'soon' is not a duration", id="grace"
        ),
        pytest.param(
            "--autoscaler-config stable-window",
            "argument --autoscaler-config: 'stable-window' must look like KEY=VALUE (e.g. stable-window=10s)",
            id="config-not-a-pair",
        ),
        pytest.param(
            "--log-level LOUD",
            "argument --log-level: invalid choice: 'LOUD'",
            id="log-level",
        ),
        pytest.param(
            "--trusted-proxies 10.0.0.0/33",
            "argument --trusted-proxies: '10.0.0.0/33' does not appear to be an IPv4 or IPv6 network",
            id="trusted-proxies",
        ),
    ],
)
def test_bad_flag_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], flags: str, message: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        parser().parse_args(["s.yaml", *shlex.split(flags)])

    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"serving up: {message}")
    assert err.endswith(f"{USAGE}\n")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("flags", "port", "drain", "grace"),
    [
        pytest.param("--port 0", 0, 1.0, 5.0, id="any-free-port"),
        pytest.param("--port 65535 --drain-quiet-period 1h", 65535, 3600.0, 5.0, id="highest"),
        pytest.param(
            "--drain-quiet-period 0.00001 --shutdown-grace 0", 8080, 0.0, 0.0, id="to-the-millisecond"
        ),
    ],
)
def test_flags_in_range_are_accepted(flags: str, port: int, drain: float, grace: float) -> None:
    args = parser().parse_args(["s.yaml", *shlex.split(flags)])

    assert (args.port, args.drain_quiet_period, args.shutdown_grace) == (port, drain, grace)


def run_prepare(tmp_path: Path, argv: list[str]) -> Prepared | int:
    return prepare(parser().parse_args([*argv, "--state-dir", str(tmp_path / "state")]))


def test_traffic_to_a_revision_that_will_not_exist_stops_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = with_field(base_service(), "spec.traffic", [{"revisionName": "nope", "percent": 100}])
    path = write(tmp_path, "hello.yaml", doc)

    assert run_prepare(tmp_path, [str(path)]) == 2
    assert capsys.readouterr().err == (
        "serving up: 1 problem(s); nothing was started:\n"
        f"  {path}: document 1 (Service/hello): spec.traffic[0].revisionName: revision 'nope' does not "
        "exist in Service default/hello (revisions: hello-00001)\n"
    )
    assert not (tmp_path / "state").exists()


def test_autoscaler_value_out_of_range_stops_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "hello.yaml", base_service())

    assert run_prepare(tmp_path, [str(path), "--autoscaler-config", "max-scale-up-rate=1e999"]) == 2
    assert capsys.readouterr().err == (
        "serving up: invalid --autoscaler-config; nothing was started:\n"
        "  max-scale-up-rate=1e999: 1e999 is out of range for a 64-bit float\n"
    )


def unusable_state_dir(tmp_path: Path, kind: str) -> tuple[Path, str]:
    if kind == "proc":
        return Path("/proc/nope"), "No such file or directory"
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder\n")
    if kind == "file":
        return taken, "File exists"
    return taken / "state", "Not a directory"


@pytest.mark.parametrize("kind", ["proc", "file", "under-a-file"])
def test_unusable_state_dir_stops_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    path = write(tmp_path, "hello.yaml", base_service())
    state, reason = unusable_state_dir(tmp_path, kind)

    assert prepare(parser().parse_args([str(path), "--state-dir", str(state)])) == 2
    assert capsys.readouterr().err == (
        f"serving up: cannot use the state dir {state}: {reason}; choose another with --state-dir "
        "(or $SERVING_STATE_DIR); nothing was started\n"
    )


def test_valid_flags_and_files_are_prepared(tmp_path: Path) -> None:
    path = write(tmp_path, "hello.yaml", base_service())

    prepared = run_prepare(tmp_path, [str(path), "--port", "0"])

    assert isinstance(prepared, Prepared)
    assert prepared.options.port == 0
    assert [s.name for s in prepared.manifests.services] == ["hello"]
    assert (tmp_path / "state").is_dir()
