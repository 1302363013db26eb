from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autoscaler.revision import RevisionAutoscaler
from autoscaler.simulate import Sample, read_trace, simulate, tick_times
from serving.autoscaling import PREFIX, revision_scaling

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", "simulate", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_trace(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def lines_of(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def burst_trace() -> list[dict[str, Any]]:
    """Idle, a burst to 300 concurrent requests for 20 s (pods follow), then idle again."""
    rows = []
    ready = 1
    for t in range(0, 120):
        concurrency = 300.0 if 10 <= t < 30 else 0.0
        if t in (14, 20):
            ready = 5 if t == 14 else 8
        if t == 60:
            ready = 1
        rows.append({"t": t, "concurrency": concurrency, "ready_pods": ready})
    return rows


def test_simulate_prints_a_decision_per_tick_with_the_contract_fields(tmp_path: Path) -> None:
    lines = lines_of(run(str(write_trace(tmp_path / "trace.jsonl", burst_trace()))))
    assert [line["t"] for line in lines] == [float(t) for t in range(0, 119, 2)]
    for line in lines:
        assert {
            "t",
            "desired_pods",
            "panic",
            "stable",
            "panic_value",
            "excess_burst_capacity",
            "mode",
        } <= set(line)
    by_t = {line["t"]: line for line in lines}
    assert by_t[0.0]["desired_pods"] == 0
    # At 10 s the 6 s panic window holds one second of 300: 50, one pod's worth, no panic yet.
    assert (by_t[10.0]["panic_value"], by_t[10.0]["desired_pods"], by_t[10.0]["panic"]) == (50.0, 1, False)
    # At 12 s: 900 / 6 = 150 needs ceil(150 / 70) = 3 pods for 1 ready, over the 200 % threshold.
    assert (by_t[12.0]["panic_value"], by_t[12.0]["desired_pods"], by_t[12.0]["panic"]) == (150.0, 3, True)
    assert max(line["desired_pods"] for line in lines) == 5
    # In panic the count never drops. The last overload is at 12 s (then the ready pods catch up), so panic
    # ends at the first tick more than a stable window later: 74 s.
    panic_lines = [line for line in lines if line["panic"]]
    assert [line["t"] for line in panic_lines] == [float(t) for t in range(12, 73, 2)]
    counts = [line["desired_pods"] for line in panic_lines]
    assert counts == sorted(counts)
    assert not by_t[118.0]["panic"]
    assert by_t[118.0]["desired_pods"] < 5
    assert by_t[118.0]["mode"] == "Proxy"


def test_ticks_see_only_samples_up_to_their_time(tmp_path: Path) -> None:
    rows = [
        {"t": 0.5, "concurrency": 70, "ready_pods": 1},
        {"t": 2.0, "concurrency": 70, "ready_pods": 1},
        {"t": 2.5, "concurrency": 700, "ready_pods": 3},
        {"t": 4.0, "concurrency": 0, "ready_pods": 3},
    ]
    lines = lines_of(run(str(write_trace(tmp_path / "trace.jsonl", rows))))
    assert [line["t"] for line in lines] == [2.0, 4.0]
    # Buckets 0 and 2 hold 70 each; bucket 1 is a gap inside the data and counts as 0.
    assert lines[0]["stable"] == pytest.approx(140 / 3, abs=1e-6)
    assert lines[0]["ready_pods"] == 1  # the 2.5 s sample is not seen at 2 s
    # 2.5 s adds 700 to bucket 2; 4 s is bucket 4, after a gap at 3.
    assert lines[1]["stable"] == pytest.approx((70 + 0 + 770 + 0 + 0) / 5)
    assert lines[1]["ready_pods"] == 3


def test_no_data_in_the_window_means_no_decision(tmp_path: Path) -> None:
    rows = [{"t": 0, "concurrency": 140, "ready_pods": 2}, {"t": 70, "concurrency": 0, "ready_pods": 2}]
    lines = lines_of(run(str(write_trace(tmp_path / "trace.jsonl", rows)), "--annotation", "window=6s"))
    by_t = {line["t"]: line for line in lines}
    assert by_t[0.0]["desired_pods"] == 2
    # 6 s after the last write the window still counts as holding data, but its average is 0: the scale-down
    # rate allows halving the two ready pods.
    assert (by_t[6.0]["desired_pods"], by_t[6.0]["stable"]) == (1, 0.0)
    assert by_t[8.0]["desired_pods"] is None
    assert by_t[8.0]["stable"] is None
    assert by_t[68.0]["desired_pods"] is None
    assert (by_t[70.0]["desired_pods"], by_t[70.0]["stable"]) == (1, 0.0)  # fresh data: 0, halving 2 pods


def test_annotations_and_config_change_the_decisions(tmp_path: Path) -> None:
    rows = [{"t": t, "concurrency": 1000.0, "ready_pods": 1} for t in range(0, 5)]
    trace = str(write_trace(tmp_path / "trace.jsonl", rows))
    default = lines_of(run(trace))
    assert default[0]["desired_pods"] == 15  # ceil(1000 / 70)
    limited = lines_of(run(trace, "--config", "max-scale-up-rate=2"))
    assert limited[0]["desired_pods"] == 2
    targeted = lines_of(
        run(trace, "--annotation", "autoscaling.knative.dev/target=10", "--container-concurrency", "50")
    )
    assert targeted[0]["desired_pods"] == 143  # 1000 / (10 * 0.7)
    assert targeted[0]["target"] == pytest.approx(7.0)


def test_rps_trace_scales_on_rps(tmp_path: Path) -> None:
    rows = [{"t": t, "rps": 420.0, "ready_pods": 1} for t in range(0, 4)]
    lines = lines_of(run(str(write_trace(tmp_path / "trace.jsonl", rows))))
    assert lines[0]["metric"] == "rps"
    assert lines[0]["desired_pods"] == 3  # 420 / (200 * 0.7)


def test_stdin_trace() -> None:
    trace = "".join(json.dumps({"t": t, "concurrency": 7, "ready_pods": 1}) + "\n" for t in range(3))
    served = lines_of(run("-", "--annotation", "target-burst-capacity=0", stdin=trace))
    assert [(line["desired_pods"], line["mode"]) for line in served] == [(1, "Serve"), (1, "Serve")]
    # With the default burst capacity of 211, one pod (capacity 100) leaves the activator in the path.
    proxied = lines_of(run("-", stdin=trace))
    assert [(line["excess_burst_capacity"], line["mode"]) for line in proxied] == [(-118, "Proxy")] * 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            '{"t": 0, "concurrency": 1, "ready_pods": 1}\nnot json\n', "line 2: not JSON", id="json"
        ),
        pytest.param('{"concurrency": 1, "ready_pods": 1}\n', 'line 1: missing "t"', id="no-t"),
        pytest.param('{"t": 0}\n', 'line 1: needs "concurrency" or "rps"', id="no-value"),
        pytest.param(
            '{"t": 0, "concurrency": 1, "ready_pods": 1}\n{"t": 1}\n',
            'line 2: needs "concurrency" or "rps" with "ready_pods", or "ready_pods" alone',
            id="neither-value-nor-ready",
        ),
        pytest.param('{"t": 0, "ready_pods": -1}\n', '"ready_pods" must be a whole', id="gap-bad-ready"),
        pytest.param(
            '{"t": 0, "concurrency": -1, "ready_pods": 1}\n', "line 1: 'concurrency' must not be negative"
        ),
        pytest.param(
            '{"t": 0, "concurrency": "x", "ready_pods": 1}\n', "line 1: 'concurrency' must be a finite"
        ),
        pytest.param('{"t": 0, "concurrency": 1}\n', 'line 1: missing "ready_pods"', id="no-ready"),
        pytest.param(
            '{"t": 0, "concurrency": 1, "ready_pods": 1.5}\n', '"ready_pods" must be a whole', id="ready"
        ),
        pytest.param(
            '{"t": 5, "concurrency": 1, "ready_pods": 1}\n\n{"t": 4, "concurrency": 1, "ready_pods": 1}\n',
            "line 3: t=4 is before the previous sample's t=5",
            id="backwards",
        ),
        pytest.param(
            '{"t": 0, "concurrency": 1, "ready_pods": 1, "x": 1}\n', 'unknown field(s) "x"', id="extra"
        ),
        pytest.param("[1, 2]\n", "line 1: expected an object", id="array"),
        pytest.param("\n", "no samples", id="empty"),
    ],
)
def test_bad_trace_lines_exit_2_naming_the_line(tmp_path: Path, content: str, message: str) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text(content)
    result = run(str(trace))
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--annotation", "autoscaling.knative.dev/window=2s"], "window=2s must be between 6s and 1h"
        ),
        pytest.param(["--annotation", "min-scale=3", "--annotation", "max-scale=1"], "min-scale=3 is above"),
        pytest.param(["--annotation", "autoscaling.knative.dev/bogus=1"], "bogus is not a known"),
        pytest.param(["--annotation", "novalue"], "must look like KEY=VALUE", id="malformed"),
        pytest.param(["--config", "max-scale-up-rate=0.5"], "max-scale-up-rate=0.5 must be greater than 1"),
        pytest.param(["--tick", "fast"], "--tick", id="tick"),
        pytest.param(
            ["--tick", "2"], "--tick: '2' is not a duration: missing a unit after 2", id="tick-no-unit"
        ),
        pytest.param(["--tick", "0"], "--tick 0 must be positive", id="tick-zero"),
        pytest.param(["--annotation", "metric=rps"], "no 'rps' value", id="metric-missing-in-trace"),
    ],
)
def test_invalid_settings_exit_2_naming_the_key(tmp_path: Path, args: list[str], message: str) -> None:
    trace = write_trace(tmp_path / "trace.jsonl", [{"t": 0, "concurrency": 1, "ready_pods": 1}])
    result = run(str(trace), *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_missing_trace_file_exits_2(tmp_path: Path) -> None:
    result = run(str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_plot_writes_a_png(tmp_path: Path) -> None:
    plot = tmp_path / "run.png"
    result = run(str(write_trace(tmp_path / "trace.jsonl", burst_trace())), "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    data = plot.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1000, 500)
    assert len(data) > 10_000  # a drawn chart, not an empty canvas


def test_tick_times_are_multiples_within_the_trace() -> None:
    assert tick_times(0.0, 6.0, 2.0) == [0.0, 2.0, 4.0, 6.0]
    assert tick_times(0.5, 5.9, 2.0) == [2.0, 4.0]
    assert tick_times(3.0, 3.0, 2.0) == []
    assert tick_times(1.0, 4.0, 1.5) == [1.5, 3.0]


def test_in_process_replay_matches_the_command(tmp_path: Path) -> None:
    rows = burst_trace()
    samples = read_trace(json.dumps(row) for row in rows)
    assert isinstance(samples[0], Sample)
    replay = simulate(samples, revision_scaling({}, 0), 2.0)
    command = lines_of(run(str(write_trace(tmp_path / "trace.jsonl", rows))))
    assert replay == command


def gap_trace() -> list[dict[str, Any]]:
    """140 concurrent requests on 2 pods for 11 s, then 10 s in which no stat arrives (the ready pods go to 4
    meanwhile), then zero load."""
    rows: list[dict[str, Any]] = []
    for t in range(31):
        ready = 2 if t < 15 else 4
        if 11 <= t <= 20:
            rows.append({"t": t, "ready_pods": ready})
        else:
            rows.append({"t": t, "concurrency": 140.0 if t <= 10 else 0.0, "ready_pods": ready})
    return rows


def test_ready_pods_alone_is_a_second_with_no_stat() -> None:
    rows = gap_trace()
    scaling = revision_scaling({PREFIX + "window": "6s"}, 0)
    lines = simulate(read_trace(json.dumps(row) for row in rows), scaling, 2.0)

    # The reference: the decider fed every second that has a stat, and nothing for the others.
    revision = RevisionAutoscaler(scaling, now=0.0, ready_pods=0)
    expected = []
    for row in rows:
        if "concurrency" in row:
            revision.collection.record_values(row["t"], row["concurrency"], 0.0)
        if row["t"] % 2 == 0:
            tick = revision.tick(float(row["t"]), row["ready_pods"])
            decision = tick.decision
            expected.append(
                (
                    row["t"],
                    None if decision is None else decision.desired_pods,
                    None if decision is None else decision.stable,
                    tick.panic,
                    row["ready_pods"],
                )
            )
    got = [
        (line["t"], line["desired_pods"], line["stable"], line["panic"], line["ready_pods"]) for line in lines
    ]
    assert got == expected

    by_t = {line["t"]: line for line in lines}
    # The ready-pod count of a gap line is honoured: 4 from 15 s on.
    assert [by_t[t]["ready_pods"] for t in (14.0, 16.0, 20.0)] == [2, 4, 4]
    # A gap is missing data, not zero load: once the 6 s window holds no stat there is no decision...
    assert (by_t[18.0]["desired_pods"], by_t[18.0]["stable"]) == (None, None)
    # ...and with stats again the 4 ready pods (not 2) bound the scale-down: at most halved, to 2.
    assert (by_t[22.0]["desired_pods"], by_t[22.0]["stable"]) == (2, 0.0)


def test_a_gap_differs_from_zero_load() -> None:
    scaling = revision_scaling({PREFIX + "window": "6s"}, 0)
    gaps = simulate(read_trace(json.dumps(row) for row in gap_trace()), scaling, 2.0)
    zeros = [{"concurrency": 0.0, **row} for row in gap_trace()]
    zeroed = simulate(read_trace(json.dumps(row) for row in zeros), scaling, 2.0)
    assert [line["desired_pods"] for line in gaps if line["t"] in (18.0, 20.0)] == [None, None]
    assert [line["desired_pods"] for line in zeroed if line["t"] in (18.0, 20.0)] == [2, 2]


def test_trace_with_gaps_through_the_command(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"t": 0, "rps": 420.0, "ready_pods": 1},
        {"t": 1, "ready_pods": 3},
        {"t": 2, "rps": 420.0, "ready_pods": 3},
    ]
    lines = lines_of(run(str(write_trace(tmp_path / "trace.jsonl", rows))))
    assert [(line["t"], line["metric"], line["ready_pods"]) for line in lines] == [
        (0.0, "rps", 1),
        (2.0, "rps", 3),
    ]


def test_plot_without_matplotlib_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from autoscaler import simulate as module

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # as if matplotlib were not installed
    code = module.main(
        [str(write_trace(tmp_path / "trace.jsonl", burst_trace())), "--plot", str(tmp_path / "p.png")]
    )
    assert code == 2
    assert "pip install 'serving[bench]'" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()
