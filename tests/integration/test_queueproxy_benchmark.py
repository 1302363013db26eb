"""A short exercise of benchmarks/dataplane.py so the script keeps working: its paths start and answer, and
its report is built from measurements (the wrk runs themselves take minutes and run only from the script)."""

from __future__ import annotations

import re
import shutil
import sys
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest

from tests.integration.scripts import load_benchmark


def load() -> ModuleType:
    return load_benchmark("dataplane")


def test_paths_start_and_answer_hello() -> None:
    dataplane = load()
    processes = dataplane.Processes()
    try:
        app_port = dataplane.start_app(processes)
        for name in ("direct", "minimal", "router", "qp-cc100"):
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
    report.skipped["nginx"] = "nginx is not installed"
    assert report.ratio("queue-proxy CC=0", 10) == 0.55  # median of 0.6 and 0.5, each within its run
    text = dataplane.render(report, ["queue-proxy CC=0"])
    assert "| queue-proxy CC=0 | throughput >= 0.55 x direct @10 | 0.55 | 0.55 | yes |" in text
    assert "| queue-proxy CC=0 | idle RSS <= 45 MiB | 40.00 | 45.00 | yes |" in text
    assert "python benchmarks/dataplane.py --runs 2" in text
    assert "| queue-proxy CC=0 | 10 | 800 | 0.55 | 0.130 | 30 | 1.200 | 0.200 | 25.0 | 10.0 |" in text
    # Without nginx the yardstick targets are reported as not measured, with the reason, never as met.
    assert (
        "| queue-proxy CC=0 | p99 @10 <= nginx's + 0.3 ms |  |  | not measured: nginx is not installed |"
        in text
    )
    assert "- skipped `nginx`: nginx is not installed" in text


def _yardstick_report(dataplane: ModuleType) -> object:
    """Two runs of direct, nginx and two queue-proxies: one within every nginx-relative target, one not."""
    report = dataplane.Report("synthetic")
    measure = dataplane.Measurement
    for shift in (0.0, 0.002):  # the second run is a little slower everywhere; medians fall in between
        run = []
        for c in dataplane.CONNECTIONS:
            run += [
                measure("direct", c, 1000.0, 0.100 + shift, 0.9 + shift, 100, 0, None),
                # nginx: 20 us CPU at 10 conns, p99 1.0 ms, adds 50 us to p50 at 1 conn.
                measure("nginx", c, 1000.0, 0.150 + shift, 1.0 + shift, 100, 0, 20.0),
                # Within: 23 us <= 1.2 x 20; 1.25 ms <= 1.0 + 0.3; adds 60 us <= 1.3 x 50.
                measure("queue-proxy good", c, 900.0, 0.160 + shift, 1.25 + shift, 100, 0, 23.0),
                # Outside: 25 us > 24; 1.4 ms > 1.3; adds 100 us > 65.
                measure("queue-proxy bad", c, 900.0, 0.200 + shift, 1.4 + shift, 100, 0, 25.0),
            ]
        report.runs.append(run)
    report.idle_rss.update({"nginx": 8.0, "queue-proxy good": 40.0, "queue-proxy bad": 50.0})
    return report


def test_yardstick_targets_are_relative_to_nginx() -> None:
    dataplane = load()
    report = _yardstick_report(dataplane)
    good = {
        re.sub(r" \(.*?\)", "", c.name): c for c in dataplane.yardstick_checks(report, "queue-proxy good")
    }
    bad = {re.sub(r" \(.*?\)", "", c.name): c for c in dataplane.yardstick_checks(report, "queue-proxy bad")}
    cpu, p99, p50 = (
        "proxy CPU/req @10 <= 1.2 x nginx's, ratio run by run",
        "p99 @10 <= nginx's + 0.3 ms",
        "p50 added @1 <= 1.3 x nginx's",
    )
    assert set(good) == set(bad) == {cpu, p99, p50}
    assert good[cpu].bound == pytest.approx(1.2)
    assert good[cpu].value == pytest.approx(23.0 / 20.0)
    assert good[p99].bound == pytest.approx(1.001 + 0.3)  # nginx's median p99 over the two runs, plus 0.3
    assert good[p50].bound == pytest.approx(65.0)  # 1.3 x the 50 us nginx adds (within each run)
    assert good[p50].value == pytest.approx(60.0)
    assert all(check.met for check in good.values())
    assert not any(check.met for check in bad.values())
    text = dataplane.render(report, ["nginx", "queue-proxy good", "queue-proxy bad"])
    cpu_row = "proxy CPU/req @10 <= 1.2 x nginx's (median 20.0 us), ratio run by run"
    assert f"| queue-proxy good | {cpu_row} | 1.15 | 1.20 | yes |" in text
    assert f"| queue-proxy bad | {cpu_row} | 1.25 | 1.20 | **no** |" in text
    assert "| queue-proxy bad | p50 added @1 <= 1.3 x nginx's (50 us) | 100.00 | 65.00 | **no** |" in text
    assert "| queue-proxy bad | idle RSS <= 45 MiB | 50.00 | 45.00 | **no** |" in text
    # nginx is the yardstick, not a product: it has no target rows, and the side-by-side table has ratios.
    assert "| nginx | throughput" not in text
    assert "| queue-proxy bad | 10 | 900 | 0.201 | 100 | 1.401 | 25.0 | 1.25 | +0.400 | 2.00 |" in text


def test_the_cpu_ratio_to_nginx_is_taken_within_each_run() -> None:
    """The machine's speed drifts between runs: each run's ratio counts, not the ratio of two medians taken
    from different runs."""
    dataplane = load()
    report = dataplane.Report("synthetic")
    measure = dataplane.Measurement
    for nginx_cpu, ours in ((20.0, 23.0), (60.0, 66.0), (30.0, 45.0)):  # ratios 1.15, 1.10, 1.50
        report.runs.append(
            [
                measure("direct", 10, 1000.0, 0.1, 0.9, 100, 0, None),
                measure("nginx", 10, 1000.0, 0.15, 1.0, 100, 0, nginx_cpu),
                measure("queue-proxy", 10, 900.0, 0.16, 1.2, 100, 0, ours),
            ]
        )
    assert report.relative("queue-proxy", "nginx", 10, "proxy_cpu_us") == pytest.approx(1.15)
    # The ratio of the medians would have been 45 / 30.
    medians = [report.median(path, 10, "proxy_cpu_us") for path in ("queue-proxy", "nginx")]
    assert medians == [45.0, 30.0]


def test_nginx_path_starts_and_answers_hello() -> None:
    dataplane = load()
    if dataplane.nginx_binary() is None:
        # nginx is an optional dependency of the benchmark only (Debian: apt-get install nginx-light).
        pytest.skip("nginx is not installed: the benchmark skips its yardstick row the same way")
    processes = dataplane.Processes()
    try:
        app_port = dataplane.start_app(processes)
        target = dataplane.PATHS["nginx"](processes, app_port)
        for _ in range(3):  # over one kept-alive upstream connection
            with urllib.request.urlopen(target.url, timeout=30) as response:
                assert response.read() == b"hello world"
        assert target.name == dataplane.NGINX
        assert 1 < dataplane.rss_mib(target.proxy_pid) < 200
        scratch = processes.scratch[0].name
    finally:
        processes.stop()
    assert all(process.poll() is not None for process in processes.running)
    assert not Path(scratch).exists()


def test_a_baseline_checkouts_queue_proxy_and_router_run_from_its_own_modules(tmp_path: Path) -> None:
    """`--baseline`: another checkout's queue-proxy and router, its modules ahead of the working directory's
    (this one's). The baseline is a copy of this checkout whose modules leave a mark beside themselves."""
    dataplane = load()
    checkout = tmp_path / "base"
    ignored = shutil.ignore_patterns(".git", ".venv", "*.so", "__pycache__", "node_modules", "build")
    shutil.copytree(dataplane.ROOT, checkout, ignore=ignored)
    marked = [checkout / "queueproxy" / "main.py", checkout / "controller" / "ingress" / "router.py"]
    for module in marked:
        module.write_text(
            module.read_text() + '\n\n__import__("pathlib").Path(__file__).with_name("ran-here").touch()\n'
        )
    baseline = dataplane.Baseline(checkout, sys.executable)
    processes = dataplane.Processes()
    try:
        app_port = dataplane.start_app(processes)
        targets = [baseline.path(0)(processes, app_port), baseline.router_path()(processes, app_port)]
        for target in targets:
            with urllib.request.urlopen(target.url, timeout=30) as response:
                assert response.read() == b"hello world"
        # Not a git checkout: its folder's name.
        assert [t.name for t in targets] == ["queue-proxy CC=0 at base", f"{dataplane.ROUTER_TASK} at base"]
    finally:
        processes.stop()
    for module in marked:
        assert module.with_name("ran-here").exists()
        assert not (dataplane.ROOT / module.relative_to(checkout)).with_name("ran-here").exists()


def test_knative_queue_proxy_answers_hello_when_built() -> None:
    dataplane = load()
    if dataplane.knative_queue_cached() is None:
        pytest.skip("Knative's queue-proxy is not built here (benchmarks/knative_queue.sh builds it, ~1 min)")
    processes = dataplane.Processes()
    try:
        app_port = dataplane.start_app(processes)
        try:
            target = dataplane.PATHS["knative-cc0"](processes, app_port)
        except dataplane.Skipped as skipped:
            pytest.skip(str(skipped))  # its fixed admin/metrics ports are taken on this machine
        with urllib.request.urlopen(target.url, timeout=30) as response:
            assert response.read() == b"hello world"
    finally:
        processes.stop()
    assert all(process.poll() is not None for process in processes.running)
