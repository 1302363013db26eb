from __future__ import annotations

import dataclasses

import pytest

from serving.autoscaling import (
    CONFIG_KEYS,
    DEFAULT,
    PREFIX,
    AutoscalerConfig,
    AutoscalingError,
    panic_window_seconds,
    parse_config,
    revision_scaling,
    validate_annotations,
)


def ann(**pairs: str) -> dict[str, str]:
    """Annotations from keyword names: min_scale="1" -> autoscaling.knative.dev/min-scale: "1"."""
    return {PREFIX + key.replace("_", "-"): value for key, value in pairs.items()}


def test_default_config_is_knatives() -> None:
    c = AutoscalerConfig()
    assert (c.stable_window, c.panic_window_percentage, c.panic_threshold_percentage) == (60, 10, 200)
    assert (c.target_utilization, c.container_concurrency_target_default) == (0.7, 100)
    assert (c.requests_per_second_target_default, c.target_burst_capacity) == (200, 211)
    assert (c.max_scale_up_rate, c.max_scale_down_rate, c.activator_capacity) == (1000, 2, 100)
    assert (c.scale_to_zero_grace_period, c.scale_to_zero_pod_retention_period, c.scale_down_delay) == (
        30,
        0,
        0,
    )
    assert (c.initial_scale, c.min_scale, c.max_scale, c.max_scale_limit) == (1, 0, 0, 0)
    assert c.enable_scale_to_zero
    assert not c.allow_zero_initial_scale


def test_parse_config_reads_every_key_with_knative_syntax() -> None:
    config = parse_config(
        {
            "stable-window": "2m",
            "max-scale-up-rate": "2",
            "enable-scale-to-zero": "False",
            "container-concurrency-target-percentage": "0.5",  # a legacy fraction
            "initial-scale": "0",
            "allow-zero-initial-scale": "true",
            "_example": "ignored, like Knative's example block",
        }
    )
    assert config.stable_window == 120
    assert config.max_scale_up_rate == 2
    assert not config.enable_scale_to_zero
    assert config.target_utilization == 0.5
    assert config.initial_scale == 0
    assert len(CONFIG_KEYS) == len(dataclasses.fields(AutoscalerConfig))


def test_parse_config_lists_every_problem() -> None:
    with pytest.raises(AutoscalingError) as caught:
        parse_config(
            {
                "stable-window": "5s",
                "max-scale-up-rate": "1",
                "target-burst-capacity": "-2",
                "scale-to-zero-grace-period": "0s",
                "min-scale": "abc",
                "no-such-key": "1",
            }
        )
    text = "\n".join(caught.value.problems)
    assert "stable-window=5s must be between 6s and 1h" in text
    assert "max-scale-up-rate=1 must be greater than 1" in text
    assert "target-burst-capacity=-2" in text
    assert "scale-to-zero-grace-period=0s must be positive" in text
    assert "min-scale=abc" in text
    assert "no-such-key: unknown config-autoscaler setting" in text


@pytest.mark.parametrize(
    ("pairs", "fragment"),
    [
        pytest.param({"initial-scale": "0"}, "initial-scale=0", id="zero-initial-needs-permission"),
        pytest.param({"max-scale-limit": "10"}, "max-scale=0 must be between 1", id="limit-needs-a-max"),
        pytest.param({"min-scale": "3", "max-scale": "2"}, "min-scale=3 is above max-scale=2", id="min-max"),
        pytest.param({"stable-window": "6500ms"}, "whole seconds", id="sub-second-window"),
        pytest.param({"panic-window-percentage": "0.5"}, "between 1 and 100", id="panic-window"),
        pytest.param({"pod-autoscaler-class": "hpa.autoscaling.knative.dev"}, "not supported", id="hpa"),
        pytest.param({"container-concurrency-target-percentage": "0"}, "(0, 100]", id="utilization"),
        pytest.param(
            {"max-scale-up-rate": "1e999"}, "max-scale-up-rate=1e999: 1e999 is out of range", id="overflow"
        ),
    ],
)
def test_parse_config_rules(pairs: dict[str, str], fragment: str) -> None:
    with pytest.raises(AutoscalingError) as caught:
        parse_config(pairs)
    assert any(fragment in p for p in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(
    ("annotations", "cc", "fragment"),
    [
        pytest.param(
            ann(min_scale="5", max_scale="2"), 0, f"{PREFIX}min-scale=5 is above {PREFIX}max-scale=2"
        ),
        pytest.param(ann(window="2s"), 0, f"{PREFIX}window=2s must be between 6s and 1h", id="window-short"),
        pytest.param(ann(window="2h"), 0, "must be between 6s and 1h", id="window-long"),
        pytest.param(ann(window="60"), 0, f"{PREFIX}window=60 is not a duration", id="window-unitless"),
        pytest.param(ann(window="6500ms"), 0, "must be whole seconds", id="window-subsecond"),
        pytest.param(ann(target="-1"), 0, f"{PREFIX}target=-1 must be at least 0.01", id="negative-target"),
        pytest.param(ann(target="x"), 0, f"{PREFIX}target=x is not a number", id="target-nan"),
        pytest.param(ann(target="1e999"), 0, f"{PREFIX}target=1e999 is not a number", id="target-overflow"),
        pytest.param(ann(min_scales="1"), 0, f"{PREFIX}min-scales is not a known", id="unknown-key"),
        pytest.param(
            ann(max_scale_up_rate="2"), 0, "max-scale-up-rate is not a known", id="not-an-annotation"
        ),
        pytest.param(ann(min_scale="-1"), 0, "min-scale=-1 must be at least 0", id="negative-min"),
        pytest.param(ann(min_scale="1.5"), 0, "min-scale=1.5 is not a whole number", id="fractional-min"),
        pytest.param(ann(target_utilization_percentage="0"), 0, "between 1 and 100", id="utilization"),
        pytest.param(ann(target_burst_capacity="-5"), 0, "target-burst-capacity=-5 must be 0", id="tbc"),
        pytest.param(ann(panic_window_percentage="0.5"), 0, "between 1 and 100", id="panic-window"),
        pytest.param(ann(panic_threshold_percentage="100"), 0, "between 110 and 1000", id="panic-threshold"),
        pytest.param(ann(activation_scale="1"), 0, "activation-scale=1 must be at least 2", id="activation"),
        pytest.param(ann(activation_scale="2", min_scale="3"), 0, "below min-scale=3", id="activation-min"),
        pytest.param(ann(activation_scale="5", max_scale="3"), 0, "above max-scale=3", id="activation-max"),
        pytest.param(ann(initial_scale="0"), 0, "initial-scale=0 is not allowed", id="zero-initial"),
        pytest.param(ann(scale_down_delay="1.5s"), 0, "must be whole seconds", id="delay-subsecond"),
        pytest.param(ann(scale_down_delay="-1s"), 0, "between 0s and 1h", id="delay-negative"),
        pytest.param(ann(scale_to_zero_pod_retention_period="2h"), 0, "between 0s and 1h", id="retention"),
        pytest.param(ann(metric="cpu"), 0, f"{PREFIX}metric=cpu must be concurrency or rps", id="metric"),
        pytest.param(ann(metric_aggregation_algorithm="max"), 0, "linear or weighted-exponential", id="algo"),
        pytest.param({f"{PREFIX}class": "hpa.autoscaling.knative.dev"}, 0, "not supported", id="hpa"),
        pytest.param({}, -1, "containerConcurrency=-1", id="negative-cc"),
    ],
)
def test_validate_annotations_names_the_key_and_rule(
    annotations: dict[str, str], cc: int, fragment: str
) -> None:
    problems = validate_annotations(annotations, cc)
    assert any(fragment in p for p in problems), problems


def test_validation_reports_every_problem_at_once() -> None:
    problems = validate_annotations(ann(window="1s", target="0", min_scale="x"), 0)
    assert len(problems) == 3


def test_max_scale_limit_applies_to_annotations() -> None:
    config = parse_config({"max-scale-limit": "10", "max-scale": "5"})
    assert any("above max-scale-limit=10" in p for p in validate_annotations(ann(max_scale="11"), 0, config))
    assert any("unbounded" in p for p in validate_annotations(ann(max_scale="0"), 0, config))
    assert validate_annotations(ann(max_scale="10"), 0, config) == []


def test_valid_annotations_in_both_spellings() -> None:
    annotations = {
        f"{PREFIX}minScale": "1",
        f"{PREFIX}max-scale": "10",
        f"{PREFIX}class": "kpa.autoscaling.knative.dev",
        f"{PREFIX}metricAggregationAlgorithm": "weightedExponential",
        f"{PREFIX}target-burst-capacity": "-1",
        "serving.knative.dev/other": "not ours",
    }
    assert validate_annotations(annotations, 10) == []
    scaling = revision_scaling(annotations, 10)
    assert (scaling.min_scale, scaling.max_scale) == (1, 10)
    assert scaling.aggregation == "weighted-exponential"
    assert scaling.target_burst_capacity == -1


@pytest.mark.parametrize(
    ("annotations", "cc", "config", "target", "total"),
    [
        pytest.param({}, 0, {}, 70.0, 100.0, id="cc0-default-100-at-70pct"),
        pytest.param({}, 10, {}, 7.0, 10.0, id="cc10"),
        pytest.param({}, 1, {}, 0.7, 1.0, id="cc1"),
        pytest.param(ann(target="50"), 0, {}, 35.0, 50.0, id="target-annotation"),
        pytest.param(ann(target="50"), 10, {}, 7.0, 10.0, id="target-capped-at-cc"),
        pytest.param(ann(target_utilization_percentage="100"), 10, {}, 10.0, 10.0, id="utilization"),
        pytest.param({}, 0, {"container-concurrency-target-percentage": "50"}, 50.0, 100.0, id="config-util"),
        pytest.param({}, 0, {"container-concurrency-target-default": "20"}, 14.0, 20.0, id="config-default"),
        pytest.param(ann(metric="rps"), 10, {}, 140.0, 200.0, id="rps-default-ignores-cc"),
        pytest.param(ann(metric="rps", target="150"), 10, {}, 105.0, 150.0, id="rps-target-not-capped"),
        pytest.param(
            ann(metric="rps"),
            0,
            {"container-concurrency-target-percentage": "50"},
            140.0,
            200.0,
            id="rps-util",
        ),
        pytest.param(ann(target="0.01"), 0, {}, 0.01, 0.01, id="floor-0.01"),
    ],
)
def test_target_and_total(
    annotations: dict[str, str], cc: int, config: dict[str, str], target: float, total: float
) -> None:
    scaling = revision_scaling(annotations, cc, parse_config(config))
    assert scaling.target == pytest.approx(target)
    assert scaling.total == pytest.approx(total)


def test_target_above_container_concurrency_is_noted_not_refused() -> None:
    scaling = revision_scaling(ann(target="50"), 10)
    assert scaling.notes
    assert "target=50 is above containerConcurrency=10" in scaling.notes[0]


@pytest.mark.parametrize(
    ("stable", "percentage", "panic"),
    [
        pytest.param(60.0, 10.0, 6.0, id="default"),
        pytest.param(6.0, 10.0, 1.0, id="rounded-to-one-bucket"),
        pytest.param(6.0, 1.0, 1.0, id="never-below-one-second"),
        pytest.param(25.0, 10.0, 3.0, id="2.5-rounds-half-up"),
        pytest.param(107.0, 13.7, 15.0, id="14.659-rounds"),
        pytest.param(3600.0, 100.0, 3600.0, id="whole"),
    ],
)
def test_panic_window(stable: float, percentage: float, panic: float) -> None:
    assert panic_window_seconds(stable, percentage) == panic


def test_revision_scaling_merges_config_and_annotations() -> None:
    config = parse_config({"scale-to-zero-pod-retention-period": "10s", "initial-scale": "2"})
    scaling = revision_scaling(
        ann(window="30s", panic_window_percentage="20", scale_down_delay="1m", activation_scale="3"),
        0,
        config,
    )
    assert (scaling.stable_window, scaling.panic_window) == (30, 6)
    assert scaling.scale_down_delay == 60
    assert scaling.scale_to_zero_pod_retention_period == 10
    assert scaling.initial_scale == 2
    assert scaling.activation_scale == 3
    assert scaling.panic_threshold == 2.0


def test_initial_scale_zero_annotation_is_ignored_unless_allowed() -> None:
    allowed = parse_config({"allow-zero-initial-scale": "true"})
    assert revision_scaling(ann(initial_scale="0"), 0, allowed).initial_scale == 0
    assert revision_scaling(ann(initial_scale="3"), 0).initial_scale == 3


def test_revision_scaling_raises_with_all_problems() -> None:
    with pytest.raises(AutoscalingError) as caught:
        revision_scaling(ann(window="1s", min_scale="2", max_scale="1"), 0, DEFAULT)
    assert len(caught.value.problems) == 2
    assert "window=1s" in str(caught.value)
