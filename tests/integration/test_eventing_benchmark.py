"""A short run of benchmarks/eventing.py so the eventing benchmark keeps working: `serving up` starts with its
Broker, Trigger and sink, wrk's events are accepted and delivered, and the report and plot are written where
asked (never over the committed results); and its report takes ratios to the baseline within each run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from tests.integration.scripts import BENCHMARKS, load_benchmark


def load() -> ModuleType:
    return load_benchmark("eventing")


def sample(eventing: ModuleType, row: str, producers: int, run: int, per_s: float) -> object:
    """A 10 s window with `per_s` events accepted and delivered; eventing uses 300 us of CPU per event."""
    events = int(per_s * 10)
    cpu = {"router": events * 200e-6, "eventing": events * 300e-6 if row != "baseline" else 0.0}
    return eventing.Sample(
        row, producers, run, 10.0, events, events, 2.0, 9.0, 1.0, 5.0, 0, cpu, sum(cpu.values()) + 1.0
    )


def test_report_takes_ratios_to_the_baseline_within_each_run() -> None:
    eventing = load()
    report = eventing.Report("python benchmarks/eventing.py --runs 2")
    for run, (base, embedded) in enumerate(((4000.0, 2000.0), (2000.0, 1500.0)), start=1):
        report.samples += [
            sample(eventing, "baseline", 10, run, base),
            sample(eventing, "embedded", 10, run, embedded),
        ]
    assert report.ratio("embedded", 10) == pytest.approx((0.5 + 0.75) / 2)  # each taken within its run
    text = eventing.render(report, None)
    assert "| embedded | 10 | 1750 (1500-2000) | 1750 (1500-2000) | 0.62 | 2.0 | 9.0 |" in text
    assert "| embedded | 10 | 200 | 300 | - |" in text  # CPU per event by process: router, eventing, ...
    verdict, met = eventing.target_check(report)
    assert met is False
    assert "not met" in verdict
    assert "python benchmarks/eventing.py --runs 2" in text


@pytest.mark.eventing
def test_quick_run_delivers_events_and_writes_its_report(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (Debian: apt-get install wrk)")
    eventing = load()
    out, samples = tmp_path / "eventing.md", tmp_path / "samples.json"
    assert (
        eventing.main(["--quick", "--producers", "1,10", "--out", str(out), "--samples", str(samples)]) == 0
    )
    assert out.parent != BENCHMARKS / "results"
    text = out.read_text()
    rows_named = r"(baseline|embedded|embedded-direct)"
    every_run = rf"^\| 1 \| {rows_named} \| (\d+) \| [\d.]+ \| (\d+) \| (\d+) \|.*\| (\d+) \| [^|]+ \|$"
    rows = re.findall(every_run, text, re.M)
    assert {(row, int(producers)) for row, producers, *_ in rows} == {
        (row, producers) for row in ("baseline", "embedded", "embedded-direct") for producers in (1, 10)
    }
    for row, producers, accepted, delivered, errors in rows:
        assert int(accepted) > 0, (row, producers)
        assert int(delivered) > 0, (row, producers)
        assert int(errors) == 0, (row, producers)
    assert "| wrk (LuaJIT script) | 10 |" in text
    assert (tmp_path / "eventing.png").stat().st_size > 0
    # The saved measurements render the same report again, without measuring.
    again = tmp_path / "again" / "eventing.md"
    assert eventing.main(["--render", str(samples), "--out", str(again)]) == 0
    assert again.read_text().split("## Every run")[1] == text.split("## Every run")[1]
