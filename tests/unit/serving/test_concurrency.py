from __future__ import annotations

import pytest

from serving.concurrency import RequestStats


def test_two_half_second_requests_average_one() -> None:
    stats = RequestStats(now=0.0)
    stats.request_in(0.0, proxied=False)
    stats.request_in(0.0, proxied=True)
    stats.request_out(0.5, proxied=False)
    stats.request_out(0.5, proxied=True)
    report = stats.report(1.0)
    assert report.average_concurrency == pytest.approx(1.0)
    assert report.average_proxied_concurrency == pytest.approx(0.5)
    assert report.request_count == 2
    assert report.proxied_request_count == 1


def test_in_flight_requests_carry_into_next_window() -> None:
    stats = RequestStats(now=10.0)
    stats.request_in(10.25, proxied=False)
    first = stats.report(11.0)
    assert first.average_concurrency == pytest.approx(0.75)
    assert first.request_count == 1
    second = stats.report(12.0)
    assert second.average_concurrency == pytest.approx(1.0)
    assert second.request_count == 0
    stats.request_out(12.5, proxied=False)
    assert stats.report(13.0).average_concurrency == pytest.approx(0.5)
    assert stats.concurrency == 0


def test_empty_window_reports_current_concurrency() -> None:
    stats = RequestStats(now=5.0)
    stats.request_in(5.0, proxied=False)
    assert stats.report(5.0).average_concurrency == 1.0


def test_long_uptime_clock_keeps_precision() -> None:
    """Monotonic clocks count from boot: a month of uptime, 1,000 requests in flight, still averaged right."""
    start = 30 * 86400.0
    stats = RequestStats(now=start)
    for i in range(1000):
        stats.request_in(start + i * 0.0005, proxied=i % 2 == 0)
    for i in range(1000):
        stats.request_out(start + 0.5 + i * 0.0005, proxied=i % 2 == 0)
    report = stats.report(start + 1.0)
    assert report.average_concurrency == pytest.approx(500.0, abs=1e-6)
    assert report.average_proxied_concurrency == pytest.approx(250.0, abs=1e-6)
