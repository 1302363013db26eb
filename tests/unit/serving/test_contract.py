"""The component contracts render to the environment their components read back unchanged, and every
variable they render is one the component's loader reads."""

from __future__ import annotations

import dataclasses
import json
import random
import string
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from activator.config import load_config as load_activator
from autoscaler.config import load_settings as load_autoscaler
from queueproxy.config import load_config as load_queue_proxy
from serving.autoscaling import DEFAULT, parse_config
from serving.config import (
    EnvContract,
    env_names,
    format_env_duration,
    format_float,
    load,
    parse_bool,
    parse_int,
    parse_log_format,
    parse_log_level,
    parse_non_negative_duration,
    parse_non_negative_float,
    parse_non_negative_int,
    parse_port,
    parse_str,
    render_env,
    setting,
)
from serving.contract import activator, autoscaler, controller, platform, queueproxy, router, tracing
from serving.contract.probe import ProbeSpec, format_probe, parse_probe
from serving.duration import parse_duration

CONCERNS: tuple[type[EnvContract], ...] = (
    queueproxy.Identity,
    queueproxy.ProxySettings,
    queueproxy.Ports,
    queueproxy.DrainSettings,
    queueproxy.LogSettings,
    activator.ActivatorConfig,
    autoscaler.Settings,
    controller.ControllerConfig,
    router.RouterConfig,
    tracing.Tracing,
)
"""Every contract class whose fields are settings (queue-proxy's `Config` nests five of them, and the
tracing concern nests in the queue-proxy's, the activator's, the router's and the controller's)."""


# --- random values in each parser's range ---------------------------------------------------------------


def _text(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits + "-._:/ ", k=rng.randint(1, 20)))


def _url(rng: random.Random, schemes: tuple[str, ...]) -> str:
    host = f"host-{rng.randint(0, 99)}.local:{rng.randint(1, 65535)}"
    return f"{rng.choice(schemes)}://{host}/p{rng.randint(0, 9)}"


def _float(rng: random.Random) -> float:
    return rng.choice(
        [
            float(rng.randint(0, 100_000)),
            rng.uniform(0, 1e6),
            rng.uniform(0, 1e-6),
            rng.uniform(1e15, 1e22),
            rng.randint(0, 10**6) / 1e3,
        ]
    )


def _positive(value: Callable[[random.Random], float]) -> Callable[[random.Random], float]:
    def positive(rng: random.Random) -> float:
        while (result := value(rng)) == 0:
            pass
        return result

    return positive


def _duration(rng: random.Random) -> float:
    """A value the duration parsers can produce: whole nanoseconds, in seconds."""
    return rng.choice(
        [
            rng.randint(0, 10**16) / 1e9,
            rng.randint(0, 10**6) / 1e3,
            float(rng.randint(0, 1000) * rng.choice((1, 60, 3600))),
            rng.randint(0, 10**9) / 1e9,
        ]
    )


def _probe(rng: random.Random) -> ProbeSpec:
    """A spec `parse_probe` produces, from a random Kubernetes Probe."""
    probe: dict[str, Any] = {}
    action: dict[str, Any] = {}
    if rng.random() < 0.5:
        action["host"] = rng.choice(["127.0.0.1", "10.0.0.7", "app.local"])
    if rng.random() < 0.5:
        action["port"] = rng.randint(1, 65535)
    if rng.random() < 0.5:
        action["path"] = rng.choice(["/", "/healthz", "ready", "/a/b?c=d"])
        action["scheme"] = rng.choice(["HTTP", "HTTPS", "http"])
        action["httpHeaders"] = [{"name": f"X-{i}", "value": _text(rng)} for i in range(rng.randint(0, 2))]
        probe["httpGet"] = action
    elif rng.random() < 0.3:
        action.pop("host", None)  # a gRPC probe names no host
        if rng.random() < 0.5:
            action["service"] = rng.choice(["", "helloworld.Greeter"])
        probe["grpc"] = action
    elif rng.random() < 0.5:
        probe["tcpSocket"] = action
    for name in ("timeoutSeconds", "periodSeconds", "initialDelaySeconds"):
        if rng.random() < 0.5:
            probe[name] = rng.choice([0, rng.randint(1, 30), rng.uniform(0, 10)])
    for name in ("successThreshold", "failureThreshold"):
        if rng.random() < 0.5:
            probe[name] = rng.randint(1, 10)
    return parse_probe(json.dumps(probe))


def _autoscaler_config(rng: random.Random) -> Any:
    """A `config-autoscaler` built from a random subset of valid settings."""
    choices = {
        "enable-scale-to-zero": ["true", "false"],
        "container-concurrency-target-percentage": ["70", "0.5", "85.5"],
        "container-concurrency-target-default": ["100", "2.5", "1000"],
        "requests-per-second-target-default": ["200", "33.3"],
        "target-burst-capacity": ["211", "-1", "0", "12.75"],
        "stable-window": ["60s", "6s", "1m30s", "1h"],
        "panic-window-percentage": ["10", "1", "33.3"],
        "panic-threshold-percentage": ["200", "110", "999.5"],
        "max-scale-up-rate": ["1000", "1.5"],
        "max-scale-down-rate": ["2", "3.25"],
        "activator-capacity": ["100", "7.5"],
        "scale-to-zero-grace-period": ["30s", "2s", "1500ms"],
        "scale-to-zero-pod-retention-period": ["0s", "1m", "250ms"],
        "scale-down-delay": ["0s", "5m", "15s"],
        "initial-scale": ["1", "3"],
        "min-scale": ["0", "2"],
        "max-scale": ["0", "50"],
    }
    keys = rng.sample(sorted(choices), rng.randint(0, len(choices)))
    return parse_config({key: rng.choice(choices[key]) for key in keys})


GENERATORS: dict[Callable[[str], Any], Callable[[random.Random], Any]] = {
    parse_str: _text,
    parse_bool: lambda rng: rng.random() < 0.5,
    parse_port: lambda rng: rng.randint(1, 65535),
    parse_non_negative_int: lambda rng: rng.choice([0, rng.randint(0, 100), rng.randint(0, 2**40)]),
    parse_non_negative_float: _float,
    parse_non_negative_duration: _duration,
    parse_log_format: lambda rng: rng.choice(["text", "json"]),
    parse_log_level: lambda rng: rng.choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    queueproxy.parse_positive_seconds: _positive(_float),
    queueproxy.parse_user_protocol: lambda rng: rng.choice(["", "http1", "h2c"]),
    parse_probe: _probe,
    activator.parse_url: lambda rng: _url(rng, ("http", "https", "ws", "wss")),
    activator.parse_positive_int: lambda rng: rng.randint(1, 1000),
    autoscaler.parse_http_url: lambda rng: _url(rng, ("http", "https")),
    autoscaler.parse_optional_http_url: lambda rng: rng.choice(["", _url(rng, ("http", "https"))]),
    autoscaler.parse_autoscaler_config: _autoscaler_config,
    autoscaler.parse_positive_duration: _positive(_duration),
    platform.parse_platform_url: lambda rng: rng.choice(["kubernetes", _url(rng, ("http", "https"))]),
    parse_int: lambda rng: rng.randint(-5, 5000),
    controller.parse_domain: lambda rng: rng.choice(
        ["example.com", f"apps-{rng.randint(0, 99)}.corp.internal"]
    ),
    router.parse_address: lambda rng: (
        f"{rng.choice(['activator.knative-serving.svc', '10.0.0.7'])}:{rng.randint(1, 65535)}"
    ),
    tracing.parse_endpoint: lambda rng: rng.choice(["", _url(rng, ("http", "https"))]),
    tracing.parse_fraction: lambda rng: rng.choice([0.0, 1.0, rng.random()]),
    router.parse_cidrs: lambda rng: tuple(
        rng.sample(["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32", "172.16.0.0/12"], rng.randint(0, 3))
    ),
}


def random_value(f: dataclasses.Field[Any], rng: random.Random) -> Any:
    """A setting's value in its parser's range; a nested concern (no setting of its own) made at random."""
    if "serving.parse" not in f.metadata:
        return random_contract(type(f.default), rng)
    return GENERATORS[f.metadata["serving.parse"]](rng)


def random_contract(cls: type[Any], rng: random.Random) -> Any:
    return cls(**{f.name: random_value(f, rng) for f in dataclasses.fields(cls)})


def samples(cls: type[Any], count: int = 200) -> Iterator[Any]:
    """The defaults (required fields filled in), then `count` random contracts; reproducible per class."""
    rng = random.Random(f"{cls.__module__}.{cls.__qualname__}")
    required = dataclasses.fields(cls)
    yield cls(**{f.name: random_value(f, rng) for f in required if f.default is dataclasses.MISSING})
    for _ in range(count):
        yield random_contract(cls, rng)


# --- round trips ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls", CONCERNS, ids=lambda cls: f"{cls.__module__.rsplit('.', 1)[1]}.{cls.__name__}"
)
def test_every_contract_round_trips_through_its_environment(cls: type[EnvContract]) -> None:
    for contract in samples(cls):
        env = contract.to_env()
        assert all(isinstance(v, str) for v in env.values())
        assert load(cls, env) == contract, env


def queue_proxy_contract(**proxy: Any) -> queueproxy.Config:
    return queueproxy.Config(
        identity=queueproxy.Identity(
            namespace="team",
            configuration="hello",
            revision="hello-00001",
            pod="hello-00001-abcde",
            pod_ip="127.0.0.1",
            service="hello",
        ),
        proxy=queueproxy.ProxySettings(container_concurrency=4, user_port=21001, timeout=30.0, **proxy),
        ports=queueproxy.Ports(
            bind_address="127.0.0.1", serving=21002, admin=21003, stats=21004, metrics=21005
        ),
        drain=queueproxy.DrainSettings(quiet_period=1.0),
        log=queueproxy.LogSettings(log_format="text"),
    )


ACTIVATOR = activator.ActivatorConfig(
    bind_address="127.0.0.1",
    port=31001,
    admin_port=31002,
    platform_url="http://127.0.0.1:31000",
    autoscaler_url="ws://127.0.0.1:31003/",
    drain_timeout=1.0,
    pod_name="activator",
    log_format="text",
)
AUTOSCALER = autoscaler.Settings(
    bind_address="127.0.0.1",
    port=31003,
    platform_url="http://127.0.0.1:31000",
    activator_url="http://127.0.0.1:31001",
    config=parse_config({"scale-to-zero-grace-period": "5s", "stable-window": "6s"}),
    log_format="text",
)


@pytest.mark.parametrize(
    ("contract", "loader"),
    [
        pytest.param(queue_proxy_contract(), load_queue_proxy, id="queue-proxy"),
        pytest.param(
            queue_proxy_contract(readiness_probe=parse_probe('{"httpGet": {"path": "/healthz"}}')),
            load_queue_proxy,
            id="queue-proxy-http-probe",
        ),
        pytest.param(ACTIVATOR, load_activator, id="activator"),
        pytest.param(AUTOSCALER, load_autoscaler, id="autoscaler"),
    ],
)
def test_components_load_what_the_platform_renders(
    contract: EnvContract, loader: Callable[[Mapping[str, str]], Any]
) -> None:
    """The components' own loaders (cross-field checks included) read the platform's environment back."""
    assert loader(contract.to_env()) == contract


def test_queue_proxy_environment_is_what_the_local_platform_writes_today() -> None:
    """The values the local pod builder (`controller/local/runtime/podspec.py`) writes come out of the
    contract unchanged."""
    env = queue_proxy_contract(readiness_probe=parse_probe('{"httpGet": {"path": "/healthz"}}')).to_env()
    assert {
        k: env[k] for k in ("REVISION_TIMEOUT_SECONDS", "DRAIN_QUIET_PERIOD", "CONTAINER_CONCURRENCY")
    } == {
        "REVISION_TIMEOUT_SECONDS": "30",
        "DRAIN_QUIET_PERIOD": "1s",
        "CONTAINER_CONCURRENCY": "4",
    }
    assert env["SERVING_READINESS_PROBE"] == '{"httpGet":{"path":"/healthz"}}'
    assert env["REVISION_IDLE_TIMEOUT_SECONDS"] == env["REVISION_RESPONSE_START_TIMEOUT_SECONDS"] == "0"
    assert AUTOSCALER.to_env()["AUTOSCALER_CONFIG"] == "stable-window=6s,scale-to-zero-grace-period=5s"
    assert ACTIVATOR.to_env()["DRAIN_TIMEOUT"] == "1s"


# --- every rendered variable is read -----------------------------------------------------------------------


class RecordingEnviron(dict[str, str]):
    """An environment that remembers which variables were looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)


LOCAL_PLATFORM_WRITES = {
    "queue-proxy": {
        "SERVING_NAMESPACE",
        "SERVING_CONFIGURATION",
        "SERVING_REVISION",
        "SERVING_SERVICE",
        "SERVING_POD",
        "SERVING_POD_IP",
        "CONTAINER_CONCURRENCY",
        "USER_PORT",
        "REVISION_TIMEOUT_SECONDS",
        "REVISION_RESPONSE_START_TIMEOUT_SECONDS",
        "REVISION_IDLE_TIMEOUT_SECONDS",
        "SERVING_READINESS_PROBE",
        "QUEUE_BIND_ADDRESS",
        "QUEUE_SERVING_PORT",
        "QUEUE_ADMIN_PORT",
        "QUEUE_STATS_PORT",
        "QUEUE_METRICS_PORT",
        "DRAIN_QUIET_PERIOD",
        "LOG_FORMAT",
        "SERVING_TRACING_ENDPOINT",
        "SERVING_TRACING_SAMPLE_RATE",
        "SERVING_TRACING_EXPORT_INTERVAL",
    },
    "autoscaler": {
        "AUTOSCALER_BIND_ADDRESS",
        "AUTOSCALER_PORT",
        "SERVING_PLATFORM_URL",
        "ACTIVATOR_URL",
        "AUTOSCALER_CONFIG",
        "LOG_FORMAT",
    },
    "activator": {
        "ACTIVATOR_BIND_ADDRESS",
        "ACTIVATOR_PORT",
        "ACTIVATOR_ADMIN_PORT",
        "SERVING_PLATFORM_URL",
        "AUTOSCALER_URL",
        "DRAIN_TIMEOUT",
        "POD_NAME",
        "LOG_FORMAT",
        "SERVING_TRACING_ENDPOINT",
        "SERVING_TRACING_SAMPLE_RATE",
        "SERVING_TRACING_EXPORT_INTERVAL",
    },
}
"""The variables `serving up` sets (controller/local/runtime/podspec.py, controller/local/system.py)."""


@pytest.mark.parametrize(
    ("component", "contract", "classes", "loader"),
    [
        pytest.param(
            "queue-proxy",
            queue_proxy_contract(),
            (*CONCERNS[:5], tracing.Tracing),
            load_queue_proxy,
            id="queue-proxy",
        ),
        pytest.param(
            "activator",
            ACTIVATOR,
            (activator.ActivatorConfig, tracing.Tracing),
            load_activator,
            id="activator",
        ),
        pytest.param("autoscaler", AUTOSCALER, (autoscaler.Settings,), load_autoscaler, id="autoscaler"),
    ],
)
def test_every_declared_variable_is_read_by_the_component(
    component: str,
    contract: EnvContract,
    classes: tuple[type[Any], ...],
    loader: Callable[[Mapping[str, str]], Any],
) -> None:
    declared = {name for cls in classes for name in env_names(cls)}
    rendered = contract.to_env()
    assert set(rendered) == declared, "to_env renders exactly the declared variables"
    environ = RecordingEnviron(rendered)
    loader(environ)
    assert declared - environ.read == set(), "declared but never read by the component"
    assert LOCAL_PLATFORM_WRITES[component] - declared == set(), "the platform writes what no contract holds"


# --- formatters ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(30.0, "30s", id="seconds"),
        pytest.param(60.0, "1m", id="minute"),
        pytest.param(3600.0, "1h", id="hour"),
        pytest.param(0.25, "0.25s", id="fraction"),
        pytest.param(0.0, "0s", id="zero"),
        pytest.param(1e6, "1000000s", id="no-exponent"),
        pytest.param(1.123456789, "1.123456789s", id="nanoseconds-beyond-%g"),
        pytest.param(1e-9, "0.000000001s", id="one-nanosecond-no-exponent"),
    ],
)
def test_durations_render_compactly_and_exactly(seconds: float, text: str) -> None:
    assert format_env_duration(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(300.0, "300", id="whole-as-integer"),
        pytest.param(2.5, "2.5", id="fraction"),
        pytest.param(1e22, "1e+22", id="large"),
        pytest.param(0.1 + 0.2, "0.30000000000000004", id="shortest-exact"),
    ],
)
def test_floats_render_as_the_shortest_exact_text(value: float, text: str) -> None:
    assert format_float(value) == text
    assert float(text) == value


@pytest.mark.parametrize(
    ("probe", "text"),
    [
        pytest.param("", "", id="none"),
        pytest.param('{"tcpSocket": {"port": 8080}}', '{"tcpSocket":{"port":8080}}', id="tcp-port"),
        pytest.param('{"tcpSocket": {}, "successThreshold": 1}', "", id="tcp-default-is-empty"),
        pytest.param(
            '{"httpGet": {"path": "ready", "scheme": "HTTPS"}, "periodSeconds": 5, "timeoutSeconds": 1}',
            '{"httpGet":{"path":"/ready","scheme":"HTTPS"},"periodSeconds":5}',
            id="http-without-defaults",
        ),
        pytest.param('{"grpc": {"port": 8080}}', '{"grpc":{"port":8080}}', id="grpc"),
        pytest.param('{"grpc": {"service": "a.B"}}', '{"grpc":{"service":"a.B"}}', id="grpc-service"),
    ],
)
def test_probes_render_as_the_smallest_equivalent_json(probe: str, text: str) -> None:
    spec = parse_probe(probe)
    assert format_probe(spec) == text
    assert parse_probe(text) == spec


def test_default_autoscaler_config_renders_empty() -> None:
    assert autoscaler.format_autoscaler_config(DEFAULT) == ""
    assert autoscaler.parse_autoscaler_config("") == DEFAULT


def test_a_setting_without_a_formatter_cannot_be_rendered() -> None:
    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Custom:
        size: int = setting("CUSTOM_SIZE", lambda text: int(text, 16), 16)

    assert load(Custom, {"CUSTOM_SIZE": "20"}) == Custom(size=32)
    with pytest.raises(TypeError, match="CUSTOM_SIZE"):
        render_env(Custom())


def test_zero_thresholds_are_kubernetes_defaults_and_negative_ones_are_refused() -> None:
    """A Service may say `successThreshold: 0` (validation accepts it, as the API server does before its
    defaulting); the queue-proxy must not refuse to start over it."""
    spec = parse_probe(
        '{"httpGet": {"path": "/"}, "periodSeconds": 5, "successThreshold": 0, "failureThreshold": 0}'
    )
    assert (spec.success_threshold, spec.failure_threshold) == (1, 3)
    with pytest.raises(ValueError, match="failureThreshold must be a"):
        parse_probe('{"httpGet": {"path": "/"}, "failureThreshold": -1}')
