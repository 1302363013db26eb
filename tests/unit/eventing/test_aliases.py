"""Where the eventing component connects the platform's own addresses: its Brokers to its own port, the
platform's Services to the router when `INGRESS_ADDRESS` is set, nothing else."""

from __future__ import annotations

import pytest

from eventing.config import load_config
from eventing.main import aliases
from serving.config import ConfigError
from serving.contract.eventing import EventingSpec, spec_from_json, spec_to_json

BASE = {"EVENTING_DATA_DIR": "/tmp/e", "SERVING_PLATFORM_URL": "http://127.0.0.1:1", "EVENTING_PORT": "8181"}
SPEC = EventingSpec(
    service_hosts=("hello.default.svc.cluster.local",),
    broker_hosts=("broker-ingress.knative-serving.svc.cluster.local",),
)


def test_brokers_connect_to_this_component_and_services_to_the_router() -> None:
    config = load_config({**BASE, "INGRESS_ADDRESS": "10.96.0.10:80"})
    assert aliases(SPEC, config) == {
        "broker-ingress.knative-serving.svc.cluster.local": ("127.0.0.1", 8181),
        "hello.default.svc.cluster.local": ("10.96.0.10", 80),
    }


def test_without_an_ingress_address_services_go_by_their_own_name() -> None:
    config = load_config({**BASE, "EVENTING_BIND_ADDRESS": "10.1.2.3"})
    assert aliases(SPEC, config) == {"broker-ingress.knative-serving.svc.cluster.local": ("10.1.2.3", 8181)}


def test_an_ipv6_ingress_address() -> None:
    config = load_config({**BASE, "INGRESS_ADDRESS": "[fd00::1]:8080"})
    assert aliases(SPEC, config)["hello.default.svc.cluster.local"] == ("fd00::1", 8080)


def test_the_hosts_survive_the_wire() -> None:
    assert spec_from_json(spec_to_json(SPEC)) == SPEC


def test_an_ingress_address_that_is_not_host_and_port_stops_the_component() -> None:
    with pytest.raises(ConfigError, match="INGRESS_ADDRESS"):
        load_config({**BASE, "INGRESS_ADDRESS": "router.knative-serving"})
