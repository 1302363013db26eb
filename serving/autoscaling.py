"""Autoscaling settings: the global `config-autoscaler` values and the per-revision
`autoscaling.knative.dev/*` annotations, parsed and validated with Knative's rules, then merged into the
settings one revision is scaled with.

Shared by the Service model (validation when a YAML file is loaded), the autoscaler and `serving simulate`.
Durations use Go's syntax (`60s`, `1m30s`, `500ms`), as Knative's annotations and config map do
(`serving.duration`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from serving.duration import GRAMMAR, DurationError, format_duration, parse_duration, parse_duration_nanos

PREFIX: Final = "autoscaling.knative.dev/"
KPA_CLASS: Final = "kpa.autoscaling.knative.dev"
HPA_CLASS: Final = "hpa.autoscaling.knative.dev"

CONCURRENCY: Final = "concurrency"
RPS: Final = "rps"
LINEAR: Final = "linear"
WEIGHTED_EXPONENTIAL: Final = "weighted-exponential"

Metric = Literal["concurrency", "rps"]
Aggregation = Literal["linear", "weighted-exponential"]

# Knative's bounds (pkg/apis/autoscaling).
TARGET_MIN: Final = 0.01
WINDOW_MIN: Final = 6.0
WINDOW_MAX: Final = 3600.0
PANIC_WINDOW_PERCENTAGE_MIN: Final = 1.0
PANIC_WINDOW_PERCENTAGE_MAX: Final = 100.0
PANIC_THRESHOLD_PERCENTAGE_MIN: Final = 110.0
PANIC_THRESHOLD_PERCENTAGE_MAX: Final = 1000.0
INT32_MAX: Final = 2**31 - 1
BUCKET_SECONDS: Final = 1.0
"""Width of one metric bucket; the panic window is never shorter (Knative's BucketSize)."""
RPS_TARGET_UTILIZATION: Final = 0.7
"""Utilisation applied to the rps target; fixed in Knative (only the annotation overrides it)."""

# Canonical key -> legacy spellings Knative still reads (first present wins, canonical first).
_ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "class": (),
    "metric": (),
    "target": (),
    "target-utilization-percentage": ("targetUtilizationPercentage",),
    "target-burst-capacity": ("targetBurstCapacity",),
    "window": (),
    "panic-window-percentage": ("panicWindowPercentage",),
    "panic-threshold-percentage": ("panicThresholdPercentage",),
    "min-scale": ("minScale",),
    "max-scale": ("maxScale",),
    "initial-scale": ("initialScale",),
    "activation-scale": (),
    "scale-down-delay": ("scaleDownDelay",),
    "scale-to-zero-pod-retention-period": ("scaleToZeroPodRetentionPeriod",),
    "metric-aggregation-algorithm": ("metricAggregationAlgorithm",),
}
KNOWN_ANNOTATIONS: Final = frozenset(
    PREFIX + name for canonical, legacy in _ALIASES.items() for name in (canonical, *legacy)
)


class AutoscalingError(ValueError):
    """Autoscaling settings are invalid; `problems` names every bad key and the rule it breaks."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid autoscaling settings:\n" + "\n".join(f"  - {p}" for p in problems))


# --- Go-syntax scalars --------------------------------------------------------------------------------------

_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_go_int(text: str) -> int:
    """A base-10 integer as Go's `strconv.ParseInt(s, 10, 32)` reads it (no spaces, no underscores)."""
    if not _INT_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not an integer")
    value = int(text)
    if not -(2**31) <= value <= INT32_MAX:
        raise ValueError(f"{text} is out of range for a 32-bit integer")
    return value


def parse_go_float(text: str) -> float:
    """A decimal number as Go's `strconv.ParseFloat` reads it; infinities and NaN are refused."""
    if not _FLOAT_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a number")
    value = float(text)
    if math.isinf(value):  # Go: `strconv.ParseFloat: parsing "1e999": value out of range`
        raise ValueError(f"{text} is out of range for a 64-bit float")
    return value


def parse_go_bool(text: str) -> bool:
    """`true`/`false` in Go's `strconv.ParseBool` spellings (1, t, T, TRUE, true, True and the false ones)."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"{text!r} is not a boolean (use true or false)")


def _whole_seconds(nanos: int) -> bool:
    return nanos % 1_000_000_000 == 0


# --- global config (config-autoscaler) ----------------------------------------------------------------------


def _config_field(key: str, parse: Callable[[str], Any], default: Any) -> Any:
    return dataclasses.field(default=default, metadata={"key": key, "parse": parse})


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoscalerConfig:
    """Cluster-wide autoscaler settings (Knative's `config-autoscaler` ConfigMap), with Knative defaults."""

    enable_scale_to_zero: bool = _config_field("enable-scale-to-zero", parse_go_bool, True)
    """Whether idle revisions may go to zero pods; when false the floor is one pod."""
    container_concurrency_target_percentage: float = _config_field(
        "container-concurrency-target-percentage", parse_go_float, 70.0
    )
    """Utilisation of a pod's concurrency the autoscaler aims at, in percent (values in (0, 1] are read as a
    fraction, for compatibility). Knative default 70."""
    container_concurrency_target_default: float = _config_field(
        "container-concurrency-target-default", parse_go_float, 100.0
    )
    """Per-pod concurrency used when the revision's container concurrency is 0 (unlimited). Knative
    default."""
    requests_per_second_target_default: float = _config_field(
        "requests-per-second-target-default", parse_go_float, 200.0
    )
    """Per-pod requests per second for revisions scaled on `rps`. Knative default."""
    target_burst_capacity: float = _config_field("target-burst-capacity", parse_go_float, 211.0)
    """Spare concurrency to keep before taking the activator out of the path: -1 = always in the path,
    0 = only at zero pods. Knative default 211 (avoids activator flapping, knative#12774)."""
    stable_window: float = _config_field("stable-window", parse_duration, 60.0)
    """Seconds averaged for stable-mode decisions and held in panic. Knative default 60 s."""
    panic_window_percentage: float = _config_field("panic-window-percentage", parse_go_float, 10.0)
    """Panic window as a percentage of the stable window (10 % of 60 s = 6 s). Knative default."""
    panic_threshold_percentage: float = _config_field("panic-threshold-percentage", parse_go_float, 200.0)
    """Panic starts when the panic-window load needs this percentage of the ready pods. Knative default."""
    max_scale_up_rate: float = _config_field("max-scale-up-rate", parse_go_float, 1000.0)
    """At most this many times the ready pods per decision (at least one more). Knative default."""
    max_scale_down_rate: float = _config_field("max-scale-down-rate", parse_go_float, 2.0)
    """At most ready / rate pods removed per decision. Knative default."""
    activator_capacity: float = _config_field("activator-capacity", parse_go_float, 100.0)
    """Concurrent requests one activator is assumed to carry, for the activator count. Knative default."""
    scale_to_zero_grace_period: float = _config_field("scale-to-zero-grace-period", parse_duration, 30.0)
    """Upper bound on the wait, once a revision is idle, for the activator to be in the path before removing
    the last pod. Knative default 30 s."""
    scale_to_zero_pod_retention_period: float = _config_field(
        "scale-to-zero-pod-retention-period", parse_duration, 0.0
    )
    """Minimum time the last pod stays after the decision to go to zero. Knative default 0 s."""
    scale_down_delay: float = _config_field("scale-down-delay", parse_duration, 0.0)
    """Scale-downs apply only after the lower demand lasted this long. Knative default 0 s."""
    initial_scale: int = _config_field("initial-scale", parse_go_int, 1)
    """Pods a new revision starts with. Knative default."""
    allow_zero_initial_scale: bool = _config_field("allow-zero-initial-scale", parse_go_bool, False)
    """Whether an initial scale of 0 is allowed (globally or by annotation). Knative default false."""
    min_scale: int = _config_field("min-scale", parse_go_int, 0)
    """Default lower bound of pods per revision. Knative default 0."""
    max_scale: int = _config_field("max-scale", parse_go_int, 0)
    """Default upper bound of pods per revision; 0 = unbounded. Knative default."""
    max_scale_limit: int = _config_field("max-scale-limit", parse_go_int, 0)
    """Largest max-scale a revision may ask for; 0 = no limit (and unbounded revisions allowed)."""
    pod_autoscaler_class: str = _config_field("pod-autoscaler-class", str, KPA_CLASS)
    """Autoscaler class of revisions without a class annotation; only the KPA is implemented."""

    @property
    def target_utilization(self) -> float:
        """`container-concurrency-target-percentage` as a fraction (Knative reads values ≤ 1 as fractions)."""
        value = self.container_concurrency_target_percentage
        return value / 100.0 if value > 1.0 else value


DEFAULT: Final = AutoscalerConfig()
CONFIG_KEYS: Final = tuple(f.metadata["key"] for f in dataclasses.fields(AutoscalerConfig))


def parse_config(pairs: Mapping[str, str], base: AutoscalerConfig = DEFAULT) -> AutoscalerConfig:
    """Build the global config from `config-autoscaler` key/value pairs over `base`, checking Knative's rules.

    Raises `AutoscalingError` listing every unknown key, unparsable value and broken rule at once.
    """
    problems: list[str] = []
    values: dict[str, Any] = {}
    by_key = {f.metadata["key"]: f for f in dataclasses.fields(AutoscalerConfig)}
    for key, raw in pairs.items():
        if key.startswith("_"):
            continue  # Knative's `_example` block and similar comments
        field = by_key.get(key)
        if field is None:
            problems.append(f"{key}: unknown config-autoscaler setting (known: {', '.join(CONFIG_KEYS)})")
            continue
        try:
            values[field.name] = field.metadata["parse"](raw)
        except ValueError as exc:
            problems.append(f"{key}={raw}: {exc}")
    config = dataclasses.replace(base, **values)
    problems += config_problems(config)
    if problems:
        raise AutoscalingError(problems)
    return config


def config_problems(c: AutoscalerConfig) -> list[str]:
    """Knative's cross-checks of the global config, each naming the setting and the rule."""
    problems: list[str] = []
    if c.pod_autoscaler_class != KPA_CLASS:
        problems.append(
            f"pod-autoscaler-class={c.pod_autoscaler_class}: not supported (only {KPA_CLASS} is implemented)"
        )
    if c.scale_to_zero_grace_period <= 0:
        problems.append(
            f"scale-to-zero-grace-period={format_duration(c.scale_to_zero_grace_period)} must be positive"
        )
    if c.scale_down_delay < 0:
        problems.append(f"scale-down-delay={format_duration(c.scale_down_delay)} cannot be negative")
    elif not _whole_seconds(round(c.scale_down_delay * 1e9)):
        problems.append(f"scale-down-delay={c.scale_down_delay}s must be whole seconds")
    if c.scale_to_zero_pod_retention_period < 0:
        problems.append("scale-to-zero-pod-retention-period cannot be negative")
    if c.target_burst_capacity < 0 and c.target_burst_capacity != -1:
        problems.append(
            f"target-burst-capacity={c.target_burst_capacity:g} must be 0 or more, or -1 (activator always "
            "in the path)"
        )
    utilization = c.target_utilization
    if not 0 < utilization <= 1:
        problems.append(
            f"container-concurrency-target-percentage={c.container_concurrency_target_percentage:g} "
            "must be in (0, 100]"
        )
    elif utilization * c.container_concurrency_target_default < TARGET_MIN:
        problems.append(
            "container-concurrency-target-percentage and container-concurrency-target-default give a "
            f"target of {utilization * c.container_concurrency_target_default:g}, below {TARGET_MIN}"
        )
    if c.requests_per_second_target_default < TARGET_MIN:
        problems.append(
            f"requests-per-second-target-default={c.requests_per_second_target_default:g} "
            f"must be at least {TARGET_MIN}"
        )
    if c.activator_capacity < 1:
        problems.append(f"activator-capacity={c.activator_capacity:g} must be at least 1")
    if c.max_scale_up_rate <= 1:
        problems.append(f"max-scale-up-rate={c.max_scale_up_rate:g} must be greater than 1")
    if c.max_scale_down_rate <= 1:
        problems.append(f"max-scale-down-rate={c.max_scale_down_rate:g} must be greater than 1")
    if not WINDOW_MIN <= c.stable_window <= WINDOW_MAX:
        problems.append(f"stable-window={format_duration(c.stable_window)} must be between 6s and 1h")
    elif not _whole_seconds(round(c.stable_window * 1e9)):
        problems.append(f"stable-window={c.stable_window}s must be whole seconds")
    if not PANIC_WINDOW_PERCENTAGE_MIN <= c.panic_window_percentage <= PANIC_WINDOW_PERCENTAGE_MAX:
        problems.append(f"panic-window-percentage={c.panic_window_percentage:g} must be between 1 and 100")
    if c.initial_scale < 0 or (c.initial_scale == 0 and not c.allow_zero_initial_scale):
        problems.append(
            f"initial-scale={c.initial_scale} must be at least 1 (or 0 with allow-zero-initial-scale=true)"
        )
    if c.min_scale < 0:
        problems.append(f"min-scale={c.min_scale} must be at least 0")
    if c.max_scale_limit < 0:
        problems.append(f"max-scale-limit={c.max_scale_limit} must be at least 0")
    lowest_max = 1 if c.max_scale_limit > 0 else 0
    if c.max_scale < lowest_max or (c.max_scale_limit > 0 and c.max_scale > c.max_scale_limit):
        problems.append(
            f"max-scale={c.max_scale} must be between {lowest_max} and max-scale-limit={c.max_scale_limit}"
        )
    if c.max_scale > 0 and c.min_scale > c.max_scale:
        problems.append(f"min-scale={c.min_scale} is above max-scale={c.max_scale}")
    return problems


# --- per-revision annotations -------------------------------------------------------------------------------


def _lookup(annotations: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """(key, value) of the first spelling of annotation `name` present, canonical first (Knative's order)."""
    for spelling in (name, *_ALIASES[name]):
        key = PREFIX + spelling
        if key in annotations:
            return key, annotations[key]
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RevisionScaling:
    """The settings one revision is scaled with: global config, overridden by its annotations."""

    metric: Metric
    container_concurrency: int
    """0 means unlimited."""
    target: float
    """Per-pod value of the metric the autoscaler aims at (total * utilisation, at least 0.01)."""
    total: float
    """Per-pod value of the metric a pod can carry (container concurrency, the target annotation or the
    default), used for burst capacity and the activator count."""
    target_utilization: float
    """Fraction of `total` aimed at."""
    target_burst_capacity: float
    stable_window: float
    """Seconds; whole."""
    panic_window: float
    """Seconds; the stable window * percentage, rounded to whole seconds, at least 1 s."""
    panic_window_percentage: float
    panic_threshold_percentage: float
    min_scale: int
    max_scale: int
    """0 means unbounded."""
    initial_scale: int
    activation_scale: int
    """0 or 1 means no activation floor; ≥ 2 raises any non-zero desire to it."""
    scale_down_delay: float
    scale_to_zero_pod_retention_period: float
    scale_to_zero_grace_period: float
    enable_scale_to_zero: bool
    aggregation: Aggregation
    max_scale_up_rate: float
    max_scale_down_rate: float
    activator_capacity: float
    notes: tuple[str, ...] = ()
    """Non-fatal remarks for the user (for example a target clamped to the container concurrency)."""

    @property
    def panic_threshold(self) -> float:
        """Panic threshold as a ratio of desired pods (panic window) to ready pods."""
        return self.panic_threshold_percentage / 100.0


class _Checker:
    """Collects problems while reading annotations; each parse returns None on failure."""

    def __init__(self, annotations: Mapping[str, str]) -> None:
        self.annotations = annotations
        self.problems: list[str] = []

    def raw(self, name: str) -> tuple[str, str] | None:
        return _lookup(self.annotations, name)

    def number(self, name: str) -> tuple[str, str, float] | None:
        found = self.raw(name)
        if found is None:
            return None
        key, value = found
        try:
            return key, value, parse_go_float(value)
        except ValueError:
            self.problems.append(f"{key}={value} is not a number")
            return None

    def integer(self, name: str, minimum: int | None = 0) -> tuple[str, str, int] | None:
        found = self.raw(name)
        if found is None:
            return None
        key, value = found
        try:
            number = parse_go_int(value)
        except ValueError:
            self.problems.append(f"{key}={value} is not a whole number")
            return None
        if minimum is not None and number < minimum:
            self.problems.append(f"{key}={value} must be at least {minimum}")
            return None
        return key, value, number

    def duration(self, name: str) -> tuple[str, str, int] | None:
        found = self.raw(name)
        if found is None:
            return None
        key, value = found
        try:
            return key, value, parse_duration_nanos(value)
        except DurationError as exc:
            self.problems.append(f"{key}={value} is not a duration: {exc.reason} ({GRAMMAR})")
            return None


def _check_unknown(c: _Checker) -> None:
    for key in c.annotations:
        if key.startswith(PREFIX) and key not in KNOWN_ANNOTATIONS:
            c.problems.append(f"{key} is not a known autoscaling annotation")


def _check_class_and_metric(c: _Checker, config: AutoscalerConfig) -> Metric:
    autoscaler_class = config.pod_autoscaler_class
    found = c.raw("class")
    if found is not None:
        key, autoscaler_class = found
        if autoscaler_class == HPA_CLASS:
            c.problems.append(f"{key}={autoscaler_class} is not supported (only {KPA_CLASS} is implemented)")
        elif autoscaler_class != KPA_CLASS:
            c.problems.append(f"{key}={autoscaler_class} is not supported (use {KPA_CLASS})")
    metric: Metric = CONCURRENCY
    found = c.raw("metric")
    if found is not None:
        key, value = found
        if value == RPS:
            metric = RPS
        elif value != CONCURRENCY:
            c.problems.append(f"{key}={value} must be concurrency or rps")
    found = c.raw("metric-aggregation-algorithm")
    if found is not None:
        key, value = found
        if value not in (LINEAR, WEIGHTED_EXPONENTIAL, "weightedExponential"):
            c.problems.append(f"{key}={value} must be linear or weighted-exponential")
    return metric


def _check_floats(c: _Checker) -> None:
    found = c.number("panic-window-percentage")
    if found is not None and not PANIC_WINDOW_PERCENTAGE_MIN <= found[2] <= PANIC_WINDOW_PERCENTAGE_MAX:
        c.problems.append(f"{found[0]}={found[1]} must be between 1 and 100")
    found = c.number("panic-threshold-percentage")
    if found is not None and not PANIC_THRESHOLD_PERCENTAGE_MIN <= found[2] <= PANIC_THRESHOLD_PERCENTAGE_MAX:
        c.problems.append(f"{found[0]}={found[1]} must be between 110 and 1000")
    found = c.number("target")
    if found is not None and found[2] < TARGET_MIN:
        c.problems.append(f"{found[0]}={found[1]} must be at least {TARGET_MIN}")
    found = c.number("target-utilization-percentage")
    if found is not None and not 1 <= found[2] <= 100:
        c.problems.append(f"{found[0]}={found[1]} must be between 1 and 100")
    found = c.number("target-burst-capacity")
    if found is not None and found[2] < 0 and found[2] != -1:
        c.problems.append(f"{found[0]}={found[1]} must be 0 or more, or -1 (activator always in the path)")


def _check_durations(c: _Checker) -> None:
    found = c.duration("window")
    if found is not None:
        key, value, nanos = found
        if not WINDOW_MIN * 1e9 <= nanos <= WINDOW_MAX * 1e9:
            c.problems.append(f"{key}={value} must be between 6s and 1h")
        elif not _whole_seconds(nanos):
            c.problems.append(f"{key}={value} must be whole seconds")
    found = c.duration("scale-down-delay")
    if found is not None:
        key, value, nanos = found
        if not 0 <= nanos <= WINDOW_MAX * 1e9:
            c.problems.append(f"{key}={value} must be between 0s and 1h")
        elif not _whole_seconds(nanos):
            c.problems.append(f"{key}={value} must be whole seconds")
    found = c.duration("scale-to-zero-pod-retention-period")
    if found is not None:
        key, value, nanos = found
        if not 0 <= nanos <= WINDOW_MAX * 1e9:
            c.problems.append(f"{key}={value} must be between 0s and 1h")


def _check_scales(c: _Checker, config: AutoscalerConfig) -> None:
    low = c.integer("min-scale")
    high = c.integer("max-scale")
    low_value = low[2] if low else 0
    high_value = high[2] if high else 0
    if high_value != 0 and high_value < low_value:
        assert low is not None
        assert high is not None
        c.problems.append(f"{low[0]}={low[1]} is above {high[0]}={high[1]}")
    if high is not None and config.max_scale_limit > 0:
        if high_value > config.max_scale_limit:
            c.problems.append(f"{high[0]}={high[1]} is above max-scale-limit={config.max_scale_limit}")
        if high_value == 0:
            c.problems.append(
                f"{high[0]}=0 (unbounded) is not allowed with max-scale-limit={config.max_scale_limit}"
            )
    activation = c.integer("activation-scale", minimum=None)
    if activation is not None:
        key, value, number = activation
        if low_value > number:
            c.problems.append(f"{key}={value} is below min-scale={low_value}")
        elif high_value != 0 and high_value < number:
            c.problems.append(f"{key}={value} is above max-scale={high_value}")
        elif number < 2:
            c.problems.append(f"{key}={value} must be at least 2")
    initial = c.integer("initial-scale")
    if initial is not None and initial[2] == 0 and not config.allow_zero_initial_scale:
        c.problems.append(f"{initial[0]}=0 is not allowed unless allow-zero-initial-scale is true")


def validate_annotations(
    annotations: Mapping[str, str], container_concurrency: int, config: AutoscalerConfig = DEFAULT
) -> list[str]:
    """Every problem with a revision's `autoscaling.knative.dev/*` annotations, by Knative's rules.

    Unknown `autoscaling.knative.dev/` keys are reported too (Knative ignores them silently; here a typo such
    as `min-scales` would otherwise go unnoticed).
    """
    c = _Checker(annotations)
    if container_concurrency < 0:
        c.problems.append(f"containerConcurrency={container_concurrency} must be 0 (unlimited) or more")
    _check_unknown(c)
    _check_class_and_metric(c, config)
    _check_floats(c)
    _check_durations(c)
    _check_scales(c, config)
    return c.problems


def panic_window_seconds(stable_window: float, percentage: float) -> float:
    """The panic window: stable * percentage, rounded half-up to whole seconds, at least one bucket.

    Computed on integer nanoseconds like Knative's `time.Duration` arithmetic, so 60 s * 10 % is exactly 6 s.
    """
    stable_nanos = round(stable_window * 1e9)
    nanos = int(float(stable_nanos) * percentage / 100.0)
    second = 1_000_000_000
    remainder = nanos % second
    rounded = nanos - remainder if remainder + remainder < second else nanos + second - remainder
    return max(rounded / 1e9, BUCKET_SECONDS)


def revision_scaling(
    annotations: Mapping[str, str], container_concurrency: int, config: AutoscalerConfig = DEFAULT
) -> RevisionScaling:
    """Merge the global config with a revision's annotations; raises `AutoscalingError` listing every
    problem."""
    problems = validate_annotations(annotations, container_concurrency, config)
    if problems:
        raise AutoscalingError(problems)

    def value(name: str) -> str | None:
        found = _lookup(annotations, name)
        return None if found is None else found[1]

    notes: list[str] = []
    metric: Metric = RPS if value("metric") == RPS else CONCURRENCY
    if metric == RPS:
        total = config.requests_per_second_target_default
        utilization = RPS_TARGET_UTILIZATION
    else:
        total = float(container_concurrency) or config.container_concurrency_target_default
        utilization = config.target_utilization
    raw_target = value("target")
    if raw_target is not None:
        total = parse_go_float(raw_target)
        if metric == CONCURRENCY and container_concurrency != 0 and total > container_concurrency:
            notes.append(
                f"{PREFIX}target={raw_target} is above containerConcurrency={container_concurrency}; "
                f"the autoscaler aims at {container_concurrency}"
            )
            total = float(container_concurrency)
    raw_utilization = value("target-utilization-percentage")
    if raw_utilization is not None:
        utilization = parse_go_float(raw_utilization) / 100
    target = max(TARGET_MIN, total * utilization)

    def number(name: str, default: float) -> float:
        raw = value(name)
        return default if raw is None else parse_go_float(raw)

    def integer(name: str, default: int) -> int:
        raw = value(name)
        return default if raw is None else parse_go_int(raw)

    def duration(name: str, default: float) -> float:
        raw = value(name)
        return default if raw is None else parse_duration(raw)

    stable_window = duration("window", config.stable_window)
    panic_percentage = number("panic-window-percentage", config.panic_window_percentage)
    initial_scale = config.initial_scale
    raw_initial = value("initial-scale")
    if raw_initial is not None and (parse_go_int(raw_initial) != 0 or config.allow_zero_initial_scale):
        initial_scale = parse_go_int(raw_initial)
    algorithm = value("metric-aggregation-algorithm")
    aggregation: Aggregation = (
        WEIGHTED_EXPONENTIAL if algorithm in (WEIGHTED_EXPONENTIAL, "weightedExponential") else LINEAR
    )
    return RevisionScaling(
        metric=metric,
        container_concurrency=container_concurrency,
        target=target,
        total=total,
        target_utilization=utilization,
        target_burst_capacity=number("target-burst-capacity", config.target_burst_capacity),
        stable_window=stable_window,
        panic_window=panic_window_seconds(stable_window, panic_percentage),
        panic_window_percentage=panic_percentage,
        panic_threshold_percentage=number("panic-threshold-percentage", config.panic_threshold_percentage),
        min_scale=integer("min-scale", config.min_scale),
        max_scale=integer("max-scale", config.max_scale),
        initial_scale=initial_scale,
        activation_scale=integer("activation-scale", 0),
        scale_down_delay=duration("scale-down-delay", config.scale_down_delay),
        scale_to_zero_pod_retention_period=duration(
            "scale-to-zero-pod-retention-period", config.scale_to_zero_pod_retention_period
        ),
        scale_to_zero_grace_period=config.scale_to_zero_grace_period,
        enable_scale_to_zero=config.enable_scale_to_zero,
        aggregation=aggregation,
        max_scale_up_rate=config.max_scale_up_rate,
        max_scale_down_rate=config.max_scale_down_rate,
        activator_capacity=config.activator_capacity,
        notes=tuple(notes),
    )
