"""A short run of benchmarks/dataplane_h2.py so the HTTP/2 benchmark keeps working: its h2c app, nginx and our
queue-proxy start, h2load gets answers through each, and the report compares them within each run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from tests.integration.scripts import load_benchmark


def load() -> ModuleType:
    return load_benchmark("dataplane_h2")


def test_report_takes_ratios_to_nginx_within_each_run() -> None:
    h2 = load()
    report = h2.Report("python benchmarks/dataplane_h2.py --runs 2", compiled=False)
    measure = h2.Measurement
    for nginx_rps, ours_rps in ((10000.0, 1000.0), (25000.0, 1000.0)):
        report.runs.append(
            [measure("direct", c, m, 50000.0, 0.02, 0.1, 400, 0, None, None, 5.0) for c, m in h2.LOADS]
            + [measure("nginx", c, m, nginx_rps, 0.06, 1.0, 100, 0, 20.0, 10.0, 8.0) for c, m in h2.LOADS]
            + [
                measure("queue-proxy CC=0", c, m, ours_rps, 0.5, 3.0, 100, 0, 500.0, 30.0, 15.0)
                for c, m in h2.LOADS
            ]
        )
    text = h2.render(report, ["direct", "nginx", "queue-proxy CC=0"])
    # vs nginx is the median of 0.10 and 0.04, each taken within its run; CPU 25 x nginx's 20 us.
    cells = "1000 | 0.02 | 0.07 | 0.500 | 3.000 | +2.000 | 500.0 | 30.0 | 25.00 | 15.0"
    assert f"| queue-proxy CC=0 | 10x10 | {cells} |" in text
    assert "| direct | 1x1 | 50000 | 1 |  | 0.020 | 0.100 |  |  |  |  | 5.0 |" in text
    assert "python benchmarks/dataplane_h2.py --runs 2" in text
    assert "**pure Python**" in text


def test_percentiles_are_latencies_some_request_had() -> None:
    h2 = load()
    latencies = [float(n) for n in range(1, 101)]
    assert (h2.percentile(latencies, 50), h2.percentile(latencies, 99)) == (50.0, 99.0)
    assert h2.percentile([7.0], 99) == 7.0


def test_short_run_answers_through_every_path(tmp_path: Path) -> None:
    if shutil.which("h2load") is None:
        pytest.skip("h2load is not installed (Debian: apt-get install nghttp2-client)")
    h2 = load()
    if h2.nginx_binary() is None:
        # The h2c app is nginx: without it there is nothing to measure (Debian: apt-get install nginx-light).
        pytest.skip("nginx is not installed: the benchmark's h2c app is nginx")
    out = tmp_path / "dataplane-h2.md"
    argv = ["--runs", "1", "--duration", "1", "--warm-up", "0.3", "--paths", "direct,nginx,qp-cc0"]
    assert h2.main([*argv, "--out", str(out)]) == 0
    text = out.read_text()
    # The app speaks h2c only, so a 200 through a proxy means the proxy reached it over HTTP/2.
    every_run = r"^\| 1 \| (.+?) \| (\d+x\d+) \| (\d+) \| [\d.]+ \| [\d.]+ \| (\d+) \| (\d+) \|"
    rows = re.findall(every_run, text, re.M)
    assert {(path, shape) for path, shape, *_ in rows} == {
        (path, f"{c}x{m}") for path in ("direct", "nginx", "queue-proxy CC=0") for c, m in h2.LOADS
    }
    for path, shape, rps, requests, errors in rows:
        assert int(rps) > 0, (path, shape)
        assert int(requests) > 0, (path, shape)
        assert int(errors) == 0, (path, shape)
    assert "skipped" not in text
