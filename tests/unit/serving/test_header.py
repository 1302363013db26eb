"""Header values the data plane reads: gRPC's `grpc-timeout`."""

from __future__ import annotations

import pytest

from serving import header


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1H", 3600.0),
        ("2M", 120.0),
        ("5S", 5.0),
        ("100m", 0.1),
        (" 250m ", 0.25),
        ("1500u", 0.0015),
        ("99999999n", 0.099999999),
    ],
)
def test_grpc_timeout_values(value: str, seconds: float) -> None:
    assert header.grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["", "S", "100", "100x", "123456789S", "-1S", "1.5S", "\u0661\u0662S", "10 S"]
)
def test_malformed_grpc_timeouts_are_ignored(value: str) -> None:
    assert header.grpc_timeout(value) is None


@pytest.mark.parametrize(
    ("seconds", "value"), [(0.0, "1m"), (0.0004, "1m"), (1.2, "1200m"), (1e9, "99999999m")]
)
def test_grpc_timeout_value_round_trips_in_milliseconds(seconds: float, value: str) -> None:
    assert header.grpc_timeout_value(seconds) == value
    parsed = header.grpc_timeout(value)
    assert parsed is not None
    assert parsed >= min(seconds, 99_999.999)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("5S", 5.0), ("0m", 0.0), ("10S", None), ("11S", None), ("nonsense", None)],
)
def test_only_a_sooner_grpc_deadline_replaces_the_revision_timeout(
    value: str | None, expected: float | None
) -> None:
    assert header.sooner_grpc_timeout(value, 10.0) == expected
