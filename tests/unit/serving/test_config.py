from __future__ import annotations

from dataclasses import dataclass

import pytest

from serving.config import (
    ConfigError,
    env_names,
    load,
    parse_non_negative_duration,
    parse_non_negative_int,
    parse_port,
    parse_str,
    setting,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    name: str = setting("SAMPLE_NAME", parse_str, required=True)
    port: int = setting("SAMPLE_PORT", parse_port, 8012)
    concurrency: int = setting("SAMPLE_CC", parse_non_negative_int, 0)
    quiet: float = setting("SAMPLE_QUIET", parse_non_negative_duration, 30.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("250ms", 0.25, id="milliseconds"),
        pytest.param("30s", 30.0, id="seconds"),
        pytest.param("1.5m", 90.0, id="minutes"),
        pytest.param("1h", 3600.0, id="hours"),
        pytest.param("12", 12.0, id="bare-number-is-seconds"),
        pytest.param("1.5", 1.5, id="bare-fraction-is-seconds"),
        pytest.param("1m30s", 90.0, id="go-compound"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param(" 2s ", 2.0, id="surrounding-blanks"),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_non_negative_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 days", "1e3", "30 s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_non_negative_duration(text)


@pytest.mark.parametrize("text", ["-1s", "-1"])
def test_parse_duration_rejects_negatives(text: str) -> None:
    with pytest.raises(ValueError, match=f"{text} is negative; it must be 0 or more"):
        parse_non_negative_duration(text)


def test_defaults_and_overrides() -> None:
    config = load(Sample, {"SAMPLE_NAME": "rev", "SAMPLE_QUIET": "2s", "SAMPLE_CC": "10"})
    assert config == Sample(name="rev", port=8012, concurrency=10, quiet=2.0)


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load(Sample, {"SAMPLE_PORT": "70000", "SAMPLE_CC": "-1", "SAMPLE_QUIET": "later"})
    problems = info.value.problems
    assert len(problems) == 4
    text = str(info.value)
    for name in ("SAMPLE_NAME", "SAMPLE_PORT", "SAMPLE_CC", "SAMPLE_QUIET"):
        assert name in text
    assert "required but not set" in text
    assert "not a TCP port" in text


def test_env_names_lists_variables() -> None:
    assert env_names(Sample) == ["SAMPLE_NAME", "SAMPLE_PORT", "SAMPLE_CC", "SAMPLE_QUIET"]
