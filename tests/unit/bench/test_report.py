from __future__ import annotations

import json
from pathlib import Path

from bench.load.sample import Sample, read_samples
from bench.results.output import write_run
from bench.results.report import load_line, render
from bench.results.result import Marker, RunResult
from bench.results.summary import Check
from bench.system.machine import Machine
from bench.system.podwatch import PodPoint

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _result() -> RunResult:
    samples = [
        Sample(target="queue-proxy", scheduled=i * 0.1, send_lag=0.0, latency=0.1 + i / 1000, status=200)
        for i in range(30)
    ]
    samples.append(
        Sample(target="activator", scheduled=1.0, send_lag=0.0, latency=0.5, status=0, error="reset")
    )
    samples.append(
        Sample(target="activator", scheduled=1.5, send_lag=0.0, latency=0.2, status=200, activator_ms=8)
    )
    return RunResult(
        scenario="dataplane-probe",
        title="dataplane-probe",
        command="serving bench dataplane-probe --rate 10",
        params={"rate": 10},
        machine=Machine(cpus=2, cpu_model="Test CPU", memory_gib=4.0, python="3.11.7", system="Linux"),
        load_before=(0.2, 0.1, 0.1),
        load_after=(3.5, 1.0, 0.5),
        samples=samples,
        generator={
            "planned": 32,
            "sent": 32,
            "max_send_lag_ms": 1.5,
            "asked_rate": 10.0,
            "achieved_rate": 9.98,
        },
        pods=[
            PodPoint(t=0.0, revision="hello-00001", desired=0, actual=0, ready=0, mode="Proxy"),
            PodPoint(t=1.0, revision="hello-00001", desired=1, actual=1, ready=1, mode="Serve"),
        ],
        rates=[(0.0, 10.0), (3.0, 10.0)],
        markers=[Marker(t=1.0, label="edit")],
        checks=[
            Check(
                name="queue-proxy p95", value=104.0, limit=105.0, unit="ms", knative="≤ 110 ms at 1000 rps"
            ),
            Check(name="activator errors", value=1, limit=0, unit="", knative="0", digits=0),
        ],
        sections=[("Rollout", "The edit landed at 1.0 s.")],
        breakdown={"svc-1": {"pod start": 300.0, "readiness": 200.0}, "svc-2": {"pod start": 250.0}},
    )


def test_report_compares_each_figure_with_its_bar_and_states_conditions() -> None:
    text = render(_result(), [("latency-over-time.png", "Latency")])
    assert "| queue-proxy p95 | 104.0 ms | ≤ 105.0 ms | ≤ 110 ms at 1000 rps | **pass** |" in text
    assert "| activator errors | 1 | ≤ 0 | 0 | **FAIL** |" in text
    assert "Overall: **FAIL**." in text
    assert "| queue-proxy | 30 | 30 | 0 |" in text
    assert "| activator | 2 | 1 | 1 (reset: 1) |" in text
    assert "at the start: 0.20, at the end (the run's own load included): 3.50" in text
    assert "otherwise nearly idle" in text
    assert "Test CPU" in text
    assert "32 requests sent of 32 planned; asked 10.0 rps, achieved 10.0 rps; worst send delay" in text
    assert "## Rollout" in text
    assert "![Latency](latency-over-time.png)" in text
    assert "serving bench dataplane-probe --rate 10" in text


def test_run_folder_has_samples_summary_plots_and_report(tmp_path: Path) -> None:
    result = _result()
    files = write_run(result, tmp_path / "run")
    names = sorted(f.name for f in files)
    assert names == sorted(
        [
            "samples.jsonl.gz",
            "pods.jsonl",
            "summary.json",
            "latency-over-time.png",
            "latency-distribution.png",
            "pods-over-time.png",
            "time-to-first-response.png",
            "report.md",
        ]
    )
    for png in tmp_path.glob("run/*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert png.stat().st_size > 5000
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["requests"] == 32
    assert summary["errors"] == 1
    assert summary["passed"] is False
    assert summary["groups"]["queue-proxy"]["latency_ms"]["count"] == 30
    assert summary["machine"]["cpu_model"] == "Test CPU"
    assert read_samples(tmp_path / "run" / "samples.jsonl.gz") == result.samples
    report = (tmp_path / "run" / "report.md").read_text()
    for name in ("latency-over-time.png", "pods-over-time.png", "time-to-first-response.png"):
        assert f"({name})" in report


def test_run_without_pods_or_breakdown_skips_those_plots(tmp_path: Path) -> None:
    result = _result()
    result.pods, result.rates, result.breakdown = [], [], None
    names = {f.name for f in write_run(result, tmp_path)}
    assert "pods-over-time.png" not in names
    assert "time-to-first-response.png" not in names
    assert not (tmp_path / "pods-over-time.png").exists()


def test_load_before_the_run_decides_whether_other_processes_competed() -> None:
    assert "other processes were competing" in load_line(3.2, 1.0, 2)
    assert "otherwise nearly idle" in load_line(0.4, 6.0, 2)
