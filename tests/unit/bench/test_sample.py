from __future__ import annotations

from pathlib import Path

import pytest

from bench.load.sample import Sample, parse_server_timing, read_samples, write_samples


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("activator;dur=12.5", 12.5, id="plain"),
        pytest.param("Activator; dur=3", 3.0, id="case-and-spaces"),
        pytest.param('cache;desc="hit", activator;dur=40;desc="cold start"', 40.0, id="second-metric"),
        pytest.param('activator;dur="7.25"', 7.25, id="quoted"),
        pytest.param("activator", 0.0, id="no-duration"),
        pytest.param("activator;dur=abc", 0.0, id="bad-duration"),
        pytest.param("activator;dur=-5", 0.0, id="negative"),
        pytest.param("db;dur=53, app;dur=47.2", None, id="other-metrics-only"),
        pytest.param("", None, id="empty"),
        pytest.param("activators;dur=9", None, id="similar-name"),
    ],
)
def test_parse_server_timing(header: str, expected: float | None) -> None:
    assert parse_server_timing(header) == expected


def test_samples_round_trip_through_gzip_json_lines(tmp_path: Path) -> None:
    samples = [
        Sample(
            target="a", scheduled=0.0, send_lag=0.001, latency=0.1, status=200, activator_ms=3.5, nbytes=2
        ),
        Sample(target="b", scheduled=0.5, send_lag=0.0, latency=2.0, status=0, error="timeout"),
        Sample(target="a", scheduled=1.0, send_lag=0.0, latency=0.2, status=200, revision="svc-00002"),
    ]
    path = tmp_path / "samples.jsonl.gz"
    assert write_samples(path, samples) == 3
    assert path.read_bytes()[:2] == b"\x1f\x8b"  # gzip magic
    assert read_samples(path) == samples


@pytest.mark.parametrize(
    ("status", "ok"),
    [
        pytest.param(200, True, id="200"),
        pytest.param(302, True, id="redirect"),
        pytest.param(404, False, id="404"),
        pytest.param(503, False, id="503"),
        pytest.param(0, False, id="no-response"),
    ],
)
def test_ok_means_status_200_to_399(status: int, ok: bool) -> None:
    assert Sample(target="t", scheduled=0, send_lag=0, latency=0, status=status).ok is ok
