"""One duration grammar (Go's `time.ParseDuration`) for every config key, annotation, variable and flag."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from activator.config import ActivatorConfig
from autoscaler.config import load_settings
from controller.cli.up import parser as serving_up_parser
from queueproxy.config import DrainSettings
from serving.autoscaling import PREFIX, parse_config, revision_scaling
from serving.config import load
from serving.duration import (
    BARE_SECONDS,
    GRAMMAR,
    DurationError,
    format_duration,
    parse_duration,
    parse_duration_nanos,
)

MAX_NANOS = 2**63 - 1


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("1m30s", 90.0, id="minutes-and-seconds"),
        pytest.param("1h2m3.5s", 3723.5, id="three-parts-fractional"),
        pytest.param(".5s", 0.5, id="leading-period"),
        pytest.param("1.s", 1.0, id="trailing-period"),
        pytest.param("0", 0.0, id="bare-zero"),
        pytest.param("-0", 0.0, id="signed-zero"),
        pytest.param("60s", 60.0, id="seconds"),
        pytest.param("1m", 60.0, id="minute"),
        pytest.param("1.5h", 5400.0, id="fractional-hours"),
        pytest.param("300ms", 0.3, id="millis"),
        pytest.param("100us", 0.0001, id="micros"),
        pytest.param("100µs", 0.0001, id="micro-sign"),
        pytest.param("100μs", 0.0001, id="greek-mu"),
        pytest.param("10ns", 1e-8, id="nanos"),
        pytest.param("-1s", -1.0, id="negative"),
        pytest.param("+2s", 2.0, id="plus-sign"),
        pytest.param("1h1h", 7200.0, id="repeated-unit"),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("1.5", "missing a unit after 1.5", id="no-unit"),
        pytest.param("60", "missing a unit after 60", id="whole-number-no-unit"),
        pytest.param("1x", "unknown unit 'x'", id="unknown-unit"),
        pytest.param("1S", "unknown unit 'S'", id="units-are-case-sensitive"),
        pytest.param("30 s", "unknown unit ' s'", id="space-before-unit"),
        pytest.param("1e3s", "unknown unit 'e'", id="exponent"),
        pytest.param("1h-1m", "unknown unit 'h-'", id="sign-inside"),
        pytest.param("s", "expected a number, found 's'", id="unit-alone"),
        pytest.param(" 1s", "expected a number, found ' '", id="leading-space"),
        pytest.param(".", "expected a number, found a period alone", id="period-alone"),
        pytest.param("1..5s", "missing a unit after 1.", id="two-periods"),
        pytest.param("", "it is empty", id="empty"),
        pytest.param("-", "a sign alone", id="sign-alone"),
        pytest.param("2562047h47m16.854775808s", "longer than Go's limit", id="one-past-int64"),
        pytest.param("9" * 40 + "h", "longer than Go's limit", id="huge"),
    ],
)
def test_not_go_durations(text: str, reason: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(text)
    assert str(caught.value).startswith(f"{text!r} is not a duration: {reason}")
    assert str(caught.value).endswith(f"({GRAMMAR})")  # every error shows the accepted forms
    assert BARE_SECONDS not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        pytest.param("2562047h47m16.854775807s", MAX_NANOS, id="int64-max"),
        pytest.param("-2562047h47m16.854775808s", -MAX_NANOS - 1, id="int64-min"),
        pytest.param("1.0000000009s", 1_000_000_000, id="fraction-truncated-like-go"),
        pytest.param("1.0000000005s1.0000000005s", 2_000_000_000, id="truncated-per-part"),
        pytest.param("0.1h", 360_000_000_000, id="exact-fraction-of-hour"),
    ],
)
def test_nanoseconds_are_exact(text: str, nanos: int) -> None:
    assert parse_duration_nanos(text) == nanos


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("1.5", 1.5, id="fraction"),
        pytest.param("12", 12.0, id="whole"),
        pytest.param(".5", 0.5, id="leading-period"),
        pytest.param("1m30s", 90.0, id="go-form-too"),
        pytest.param("0", 0.0, id="zero"),
    ],
)
def test_bare_seconds_where_allowed(text: str, seconds: float) -> None:
    assert parse_duration(text, bare_seconds=True) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["soon", "1e3", "", "1.5x"])
def test_bare_seconds_errors_name_both_forms(text: str) -> None:
    with pytest.raises(DurationError, match="is not a duration") as caught:
        parse_duration(text, bare_seconds=True)
    assert str(caught.value).endswith(f"({GRAMMAR}; {BARE_SECONDS})")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(3600.0, "1h", id="hour"),
        pytest.param(120.0, "2m", id="minutes"),
        pytest.param(1.5, "1.5s", id="seconds"),
        pytest.param(0.0, "0s", id="zero"),
    ],
)
def test_format_duration_reads_back(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


# --- every call site reads the same grammar -------------------------------------------------------------

PLATFORM = {"SERVING_PLATFORM_URL": "http://127.0.0.1:9000"}
Reader = Callable[[str], float]


def queue_proxy_drain(value: str) -> float:
    return load(DrainSettings, {"DRAIN_QUIET_PERIOD": value}).quiet_period


def activator_drain(value: str) -> float:
    env = {**PLATFORM, "AUTOSCALER_URL": "ws://127.0.0.1:2/", "DRAIN_TIMEOUT": value}
    return load(ActivatorConfig, env).drain_timeout


def autoscaler_scrape_timeout(value: str) -> float:
    return load_settings({**PLATFORM, "AUTOSCALER_SCRAPE_TIMEOUT": value}).scrape_timeout


def autoscaler_config_in_env(value: str) -> float:
    return load_settings(
        {**PLATFORM, "AUTOSCALER_CONFIG": f"stable-window=1m,scale-down-delay={value}"}
    ).config.scale_down_delay


def config_key(value: str) -> float:
    return parse_config({"scale-to-zero-grace-period": value}).scale_to_zero_grace_period


def annotation(value: str) -> float:
    return revision_scaling(
        {PREFIX + "scale-to-zero-pod-retention-period": value}, 0
    ).scale_to_zero_pod_retention_period


SITES = [
    # reader, the name its errors give, whether a bare number is seconds (the variables' documented form)
    pytest.param(queue_proxy_drain, "DRAIN_QUIET_PERIOD", True, id="env-queue-proxy"),
    pytest.param(activator_drain, "DRAIN_TIMEOUT", True, id="env-activator"),
    pytest.param(autoscaler_scrape_timeout, "AUTOSCALER_SCRAPE_TIMEOUT", True, id="env-autoscaler"),
    pytest.param(autoscaler_config_in_env, "scale-down-delay=", False, id="config-in-env"),
    pytest.param(config_key, "scale-to-zero-grace-period=", False, id="config-key"),
    pytest.param(annotation, PREFIX + "scale-to-zero-pod-retention-period=", False, id="annotation"),
]


@pytest.mark.parametrize(("read", "name", "bare"), SITES)
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("1m30s", 90.0, id="compound"),
        pytest.param("2m", 120.0, id="minutes"),
        pytest.param("1.5m", 90.0, id="fraction"),
    ],
)
def test_every_site_reads_go_durations(
    read: Reader, name: str, bare: bool, text: str, seconds: float
) -> None:
    assert read(text) == seconds


@pytest.mark.parametrize(("read", "name", "bare"), SITES)
def test_every_site_names_its_key_and_the_grammar(read: Reader, name: str, bare: bool) -> None:
    with pytest.raises(ValueError, match="not a duration") as caught:
        read("1x")
    message = str(caught.value)
    assert name in message
    assert "unknown unit 'x'" in message
    assert GRAMMAR in message


@pytest.mark.parametrize(("read", "name", "bare"), SITES)
def test_bare_number_is_seconds_only_for_variables(read: Reader, name: str, bare: bool) -> None:
    if bare:
        assert read("2") == 2.0
    else:
        with pytest.raises(ValueError, match="missing a unit after 2") as caught:
            read("2")
        assert name in str(caught.value)


@pytest.mark.parametrize(
    ("read", "message"),
    [
        pytest.param(queue_proxy_drain, "DRAIN_QUIET_PERIOD: -1s is negative", id="env-queue-proxy"),
        pytest.param(activator_drain, "DRAIN_TIMEOUT: -1s is negative", id="env-activator"),
        pytest.param(
            autoscaler_scrape_timeout, "AUTOSCALER_SCRAPE_TIMEOUT: -1s is negative", id="env-autoscaler"
        ),
        pytest.param(autoscaler_config_in_env, "scale-down-delay=-1s cannot be negative", id="config-in-env"),
        pytest.param(config_key, "scale-to-zero-grace-period=-1s must be positive", id="config-key"),
        pytest.param(
            annotation,
            f"{PREFIX}scale-to-zero-pod-retention-period=-1s must be between 0s and 1h",
            id="annotation",
        ),
    ],
)
def test_negative_durations_parse_then_meet_each_keys_rule(read: Reader, message: str) -> None:
    with pytest.raises(ValueError, match="-1s") as caught:
        read("-1s")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("1m30s", 90.0, id="go"),
        pytest.param("2", 2.0, id="bare-seconds"),
        pytest.param("0", 0.0, id="zero"),
    ],
)
def test_serving_up_duration_flags(value: str, seconds: float) -> None:
    args = serving_up_parser().parse_args(
        ["svc.yaml", "--drain-quiet-period", value, "--shutdown-grace", value]
    )
    assert (args.drain_quiet_period, args.shutdown_grace) == (seconds, seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("1x", "'1x' is not a duration: unknown unit 'x'", id="unknown-unit"),
        pytest.param("-1s", "-1s", id="negative"),  # refused; the wording is the flag's own rule
    ],
)
def test_serving_up_duration_flag_errors(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        serving_up_parser().parse_args(["svc.yaml", f"--drain-quiet-period={value}"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--drain-quiet-period" in err
    assert message in err
