"""A short exercise of benchmarks/dataplane.py so the script keeps working: its paths start and answer, and
its report is built from measurements (the wrk runs themselves take minutes and run only from the script)."""

from __future__ import annotations

import importlib.util
import sys
import urllib.request
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "dataplane.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dataplane", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script loads
    spec.loader.exec_module(module)
    return module


def test_paths_start_and_answer_hello() -> None:
    dataplane = load()
    processes = dataplane.Processes()
    try:
        app_port = dataplane.start_app(processes)
        for name in ("direct", "minimal", "qp-cc100"):
            target = dataplane.PATHS[name](processes, app_port)
            with urllib.request.urlopen(target.url, timeout=30) as response:
                assert response.read() == b"hello world"
            if target.proxy_pid:
                assert 5 < dataplane.rss_mib(target.proxy_pid) < 500
                assert sum(dataplane.cpu_seconds(target.proxy_pid)) > 0
    finally:
        processes.stop()
    assert all(process.poll() is not None for process in processes.running)


def test_report_pairs_paths_within_each_run() -> None:
    dataplane = load()
    report = dataplane.Report("python benchmarks/dataplane.py --runs 2")
    measure = dataplane.Measurement
    for direct_rps, proxied_rps in ((1000.0, 600.0), (2000.0, 1000.0)):
        report.runs.append(
            [measure("direct", c, direct_rps, 0.1, 1.0, 100, 0, None) for c in dataplane.CONNECTIONS]
            + [
                measure("queue-proxy CC=0", c, proxied_rps, 0.13, 1.2, 100, 0, 25.0, 10.0)
                for c in dataplane.CONNECTIONS
            ]
            + [
                measure(dataplane.MINIMAL, c, 1500.0, 0.11, 1.1, 100, 0, 38.0, 20.0)
                for c in dataplane.CONNECTIONS
            ]
        )
    report.idle_rss["queue-proxy CC=0"] = 40.0
    assert report.ratio("queue-proxy CC=0", 10) == 0.55  # median of 0.6 and 0.5, each within its run
    text = dataplane.render(report, ["queue-proxy CC=0"])
    assert "| queue-proxy CC=0 | throughput >= 0.55 x direct @10 | 0.55 | yes |" in text
    assert "| queue-proxy CC=0 | p50 added <= 40 us @1 | 30.00 | yes |" in text
    assert "| queue-proxy CC=0 | p99 added <= 0.5 ms @10 | 0.20 | yes |" in text
    assert "python benchmarks/dataplane.py --runs 2" in text
    # The minimal forwarder costs twice the reference machine's 19 us here, so the 30 us target becomes 60.
    assert (
        "| queue-proxy CC=0 | proxy CPU <= 60.0 us/req @10 (30 us scaled by the minimal forwarder) |" in text
    )
    assert "| queue-proxy CC=0 | 10 | 800 | 0.55 | 0.130 | 30 | 1.200 | 0.200 | 25.0 | 10.0 |" in text
