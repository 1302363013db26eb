"""Smoke runs of the autoscaler benchmarks at toy sizes, so they keep working (their targets are not checked
here: timing belongs to the benchmark runs themselves)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--no-write"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def test_decider_benchmark_runs() -> None:
    result = run("autoscaler_decider.py", "--revisions", "20", "--pods", "5", "--runs", "2")
    assert result.returncode in (0, 1), result.stderr  # 1 only means the target was missed
    assert "20 revisions x 5 ready pods, 2 ticks" in result.stdout


def test_scrape_benchmark_runs() -> None:
    result = run("autoscaler_scrape.py", "--pods", "20", "--ticks", "2")
    assert result.returncode in (0, 1), result.stderr
    assert "20 revisions x 1 pods: 20 pod scrapes per second" in result.stdout
    assert "20/20 revisions recorded" in result.stdout
