"""The Helm chart (charts/serving): it lints, renders objects the Kubernetes API accepts, sets only variables
the components' contracts read (and values they parse), wires the components to each other, locks every pod
down, grants each component only what it needs, renders Eventing only when it is enabled, and refuses a wrong
value with a message naming it.
"""

from __future__ import annotations

import base64
import dataclasses
import http.server
import itertools
import json
import re
import subprocess
import sys
import threading
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from controller.cli import COMMANDS
from controller.kube.eventing import EVENT_RESOURCES, KubeAddresses
from serving.autoscaling import CONFIG_KEYS
from serving.config import env_names, load
from serving.contract.activator import ActivatorConfig
from serving.contract.autoscaler import Settings
from serving.contract.controller import ControllerConfig
from serving.contract.eventing import EventingConfig
from serving.contract.router import RouterConfig
from serving.kube.lease import LEADER_LABEL
from tests.chart.helm import (
    CASES,
    CHART,
    CUSTOM_VALUES,
    NAMESPACE,
    POD_IP,
    ROOT,
    WORKLOADS,
    Helm,
    Obj,
    Renders,
    Values,
    container,
    env_of,
    named,
    of_kind,
    pod_specs,
    port_named,
    values_of,
    workload,
)

KUBE_VERSION: Final = "1.37"
"""The Kubernetes version the rendered objects are validated against (tests/kube builds the same minor)."""


# --- the components and their contracts ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Component:
    contract: type[Any]
    args: tuple[str, ...]
    derived: frozenset[str]
    """Variables the chart computes from the release rather than from a value (so they differ from the
    contract's defaults on purpose)."""
    unset: frozenset[str] = frozenset()
    """Contract variables the chart leaves at the contract's default, with the reason in COMPONENTS."""


COMPONENTS: Final = {
    # EVENTING is off by default in the contract (the Eventing CRDs may be missing) and on in the chart.
    "controller": Component(
        ControllerConfig,
        ("controller", "--kubernetes"),
        frozenset(
            {
                "SYSTEM_NAMESPACE",
                "QUEUE_SIDECAR_IMAGE",
                "POD_NAME",
                "SERVING_PROBE_SECRET",
                "EVENTING",
                "EVENTING_TOKEN",
            }
        ),
    ),
    # LEADER_ELECT is off by default in the contract (one machine has no Lease) and on in the chart.
    "autoscaler": Component(
        Settings,
        ("autoscaler",),
        frozenset({"SERVING_PLATFORM_URL", "ACTIVATOR_URL", "LEADER_ELECT", "SYSTEM_NAMESPACE", "POD_NAME"}),
    ),
    "activator": Component(
        ActivatorConfig,
        ("activator",),
        frozenset(
            {
                "SERVING_PLATFORM_URL",
                "AUTOSCALER_URL",
                "POD_NAME",
                "POD_IP",
                "SYSTEM_NAMESPACE",
                "ACTIVATOR_SERVICE",
                "SERVING_PROBE_SECRET",
            }
        ),
        # With POD_IP set, the activator's position among its Service's ready endpoints replaces these (static
        # subsetting could not follow a Deployment the HPA resizes).
        unset=frozenset({"ACTIVATOR_INDEX", "ACTIVATOR_COUNT"}),
    ),
    "router": Component(RouterConfig, ("router",), frozenset({"SERVING_PLATFORM_URL", "ACTIVATOR_ADDRESS"})),
    "eventing": Component(
        EventingConfig,
        ("eventing",),
        frozenset({"EVENTING_DATA_DIR", "SERVING_PLATFORM_URL", "EVENTING_TOKEN", "INGRESS_ADDRESS"}),
    ),
}

EXTRA_ENV: Final[frozenset[str]] = frozenset()
"""Variables the chart may set that no contract declares: none. (`KUBECONFIG` is not needed in a pod: the
Kubernetes adapter falls back to the in-cluster service account.)"""

ADMIN_PORT_VAR: Final = {
    "autoscaler": "AUTOSCALER_PORT",
    "activator": "ACTIVATOR_ADMIN_PORT",
    "router": "ROUTER_ADMIN_PORT",
    "eventing": "EVENTING_ADMIN_PORT",
}
"""The variable naming the port each component serves /healthz and /metrics on (the controller has none)."""

EVENTING_OBJECTS: Final = {
    ("ServiceAccount", "eventing"),
    ("Service", "broker-ingress"),
    ("Service", "webhook"),
    ("Service", "eventing"),
    ("StatefulSet", "eventing"),
    ("Secret", "serving-eventing-token"),
    ("Service", "controller"),
}
"""What the chart renders for Eventing only: the component, its Services, the feed's token and the
controller's Service (the feed is its only port)."""


def eventing_enabled(case: str) -> bool:
    return bool(values_of(case)["eventing"]["enabled"])


def deployed(case: str) -> list[str]:
    """The components a values case runs."""
    return [name for name in COMPONENTS if name != "eventing" or eventing_enabled(case)]


COMPONENT_CASES: Final = [
    pytest.param(name, case, id=f"{name}-{case}") for case in CASES for name in deployed(case)
]
"""(component, case) for every component each case runs."""


def contract_env_names(cls: type[Any]) -> set[str]:
    """Every variable a contract reads, its nested concerns included (fields without a variable whose type is
    a dataclass, as `render_env` walks them)."""
    names = set(env_names(cls))
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints.get(f.name)
        if not f.metadata and isinstance(kind, type) and dataclasses.is_dataclass(kind):
            names |= contract_env_names(kind)
    return names


def component_env(objects: list[Obj], name: str) -> dict[str, str]:
    return env_of(container(objects, name))


def loaded(objects: list[Obj], name: str) -> Any:
    """The component's config as it loads it from the environment the chart gives it."""
    component = COMPONENTS[name]
    config = load(component.contract, component_env(objects, name))
    problems: list[str] = config.problems() if hasattr(config, "problems") else []
    assert not problems, f"{name}: {problems}"
    return config


# --- helm lint ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
@pytest.mark.parametrize("case", CASES)
def test_chart_lints(helm: Helm, case: str, strict: bool) -> None:
    result = helm.lint(CASES[case], strict=strict)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout, result.stdout
    assert "[ERROR]" not in result.stdout, result.stdout
    assert "[WARNING]" not in result.stdout, result.stdout


# --- rendered objects against the Kubernetes schemas ------------------------------------------------------

EXPECTED_KINDS: Final = (
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "Secret",
    "Deployment",
    "StatefulSet",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Pod",
    "CustomResourceDefinition",
)


@pytest.mark.parametrize("case", CASES)
def test_chart_renders_the_expected_kinds(renders: Renders, case: str) -> None:
    expected = {*EXPECTED_KINDS} - (set() if eventing_enabled(case) else {"StatefulSet"})
    assert sorted({o["kind"] for o in renders(case)}) == sorted(expected)


@pytest.mark.parametrize("case", CASES)
def test_secret_references_name_a_rendered_secret_and_key(renders: Renders, case: str) -> None:
    """The probe secret (the controller and the activator) and the Eventing feed's token (the controller and
    the eventing component) come from the chart's own Secrets, which hold generated values (40 random
    characters)."""
    objects = renders(case)
    readers = []
    for where, spec in pod_specs(objects):
        for each in spec["containers"]:
            for var in each.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    secret = named(objects, "Secret", ref["name"])
                    value = base64.b64decode(secret["data"][ref["key"]]).decode()
                    assert len(value) == 40
                    assert value.isalnum()
                    readers.append((where, var["name"]))
    expected = [
        ("Deployment/activator", "SERVING_PROBE_SECRET"),
        ("Deployment/controller", "SERVING_PROBE_SECRET"),
    ]
    if eventing_enabled(case):
        expected += [("Deployment/controller", "EVENTING_TOKEN"), ("StatefulSet/eventing", "EVENTING_TOKEN")]
    assert sorted(readers) == sorted(expected)


@pytest.mark.parametrize("kind", EXPECTED_KINDS)
def test_rendered_objects_validate_against_kubernetes_schemas(renders: Renders, kind: str) -> None:
    """Strict validation: an unknown or misspelt field fails, as `kubectl apply --validate=strict` would."""
    checked = 0
    for case in CASES:
        for obj in of_kind(renders(case), kind):
            try:
                kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                pytest.skip(
                    f"kubernetes-validate has no {KUBE_VERSION} schema for {obj['apiVersion']} {kind}"
                )
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(str(p) for p in exc.path)
                pytest.fail(f"{case}: {kind}/{obj['metadata']['name']} at {where}: {exc.message}")
            checked += 1
    assert checked, f"no {kind} rendered"


@pytest.mark.parametrize("case", CASES)
def test_every_object_carries_the_common_labels(renders: Renders, case: str) -> None:
    for obj in renders(case):
        if obj["kind"] == "CustomResourceDefinition":
            continue  # crds/ is installed as is by Helm, not templated
        labels = obj["metadata"]["labels"]
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert labels["app.kubernetes.io/name"] == "serving", where
        assert labels["app.kubernetes.io/instance"] == "serving", where
        assert labels["app.kubernetes.io/part-of"] == "serving", where
        assert labels["app.kubernetes.io/version"] == "0.1.0", where
        assert labels["helm.sh/chart"] == "serving-0.1.0", where
        assert labels["app.kubernetes.io/component"] in {
            *COMPONENTS,
            "test",
            "probe-secret",
            "eventing-token",
        }, where
        if obj["metadata"].get("namespace") is not None:
            assert obj["metadata"]["namespace"] == NAMESPACE, where


# --- environment variables against the contracts -----------------------------------------------------------


@pytest.mark.parametrize(("name", "case"), COMPONENT_CASES)
def test_every_variable_the_chart_sets_is_read_by_the_contract(
    renders: Renders, name: str, case: str
) -> None:
    component = COMPONENTS[name]
    variables = [var["name"] for var in container(renders(case), name)["env"]]
    assert len(variables) == len(set(variables)), f"{name}: a variable is set twice: {variables}"
    unread = set(variables) - contract_env_names(component.contract) - EXTRA_ENV
    assert not unread, f"{name} sets {sorted(unread)}, which {component.contract.__qualname__} does not read"


@pytest.mark.parametrize("name", COMPONENTS)
def test_the_chart_sets_every_contract_variable(renders: Renders, name: str) -> None:
    """Values map one to one onto the contract: every variable appears in the pod spec (`kubectl describe`
    shows the whole configuration), except the documented few."""
    component = COMPONENTS[name]
    variables = set(component_env(renders("default"), name))
    missing = contract_env_names(component.contract) - variables - component.unset
    assert not missing, f"{name}: the chart does not set {sorted(missing)}"


@pytest.mark.parametrize(("name", "case"), COMPONENT_CASES)
def test_the_values_the_chart_sets_parse_with_the_contract(renders: Renders, name: str, case: str) -> None:
    loaded(renders(case), name)  # raises ConfigError naming every bad variable


@pytest.mark.parametrize("name", COMPONENTS)
def test_default_values_are_the_contract_defaults(renders: Renders, name: str) -> None:
    component = COMPONENTS[name]
    env = component_env(renders("default"), name)
    contract_default = load(component.contract, {k: v for k, v in env.items() if k in component.derived})
    assert loaded(renders("default"), name) == contract_default


def test_custom_values_reach_the_components(renders: Renders) -> None:
    objects = renders("custom")
    controller = loaded(objects, "controller")
    assert controller.domain == "apps.example.org"
    assert controller.queue_sidecar_image.startswith("registry.example.org/platform/queue-proxy@sha256:")
    assert (controller.queue_sidecar_cpu, controller.queue_sidecar_memory) == ("50m", "64Mi")
    assert controller.drain_seconds == 45
    assert controller.gc_retain_since_create_time == 24 * 3600
    assert controller.gc_retain_since_last_active_time == 5400
    assert (controller.gc_min_non_active_revisions, controller.gc_max_non_active_revisions) == (5, -1)
    assert (controller.log_format, controller.log_level) == ("text", "DEBUG")
    assert named(objects, "Deployment", "controller")["spec"]["replicas"] == 2

    autoscaler = loaded(objects, "autoscaler")
    assert named(objects, "Deployment", "autoscaler")["spec"]["replicas"] == 2
    assert autoscaler.leader_elect
    assert autoscaler.port == 8081
    assert autoscaler.scrape_timeout == 0.5
    assert autoscaler.activator_url == ""
    assert autoscaler.config.stable_window == 90
    assert autoscaler.config.max_scale_up_rate == 10
    assert autoscaler.config.target_utilization == 0.7
    assert autoscaler.config.enable_scale_to_zero is False
    assert autoscaler.config.scale_down_delay == 30
    assert autoscaler.config.max_scale_limit == 1_000_000
    assert autoscaler.log_level == "WARNING"

    activator = loaded(objects, "activator")
    assert (activator.bind_address, activator.port, activator.admin_port) == ("::", 8013, 9095)
    assert (activator.queue_depth, activator.drain_timeout) == (500, 20)
    hpa = named(objects, "HorizontalPodAutoscaler", "activator")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 7)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 80
    assert named(objects, "PodDisruptionBudget", "activator")["spec"]["minAvailable"] == 2

    router = loaded(objects, "router")
    assert router.domain == "apps.example.org"
    assert router.trusted_proxies == ("10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32")
    assert (router.port, router.admin_port, router.log_level) == (8088, 9099, "DEBUG")
    assert named(objects, "Deployment", "router")["spec"]["replicas"] == 3
    assert router.cluster_domain == controller.cluster_domain == "k8s.internal"
    service = named(objects, "Service", "router")
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert service["spec"]["ports"][0]["port"] == 8000
    assert service["spec"]["ports"][0]["nodePort"] == 30080
    assert service["metadata"]["annotations"] == {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}

    eventing = loaded(objects, "eventing")
    assert (eventing.bind_address, eventing.port, eventing.admin_port) == ("::", 8085, 9095)
    assert (eventing.log_format, eventing.log_level) == ("text", "WARNING")
    assert eventing.platform_url == "http://controller.serving-system.svc.k8s.internal:8091"
    assert controller.eventing_feed_port == 8091
    assert eventing.ingress_address == "router.serving-system.svc.k8s.internal:8000"
    stateful = named(objects, "StatefulSet", "eventing")
    (claim,) = stateful["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    pod = stateful["spec"]["template"]
    assert pod["spec"]["terminationGracePeriodSeconds"] == 45
    assert pod["spec"]["nodeSelector"] == {"topology.kubernetes.io/zone": "zone-a"}
    assert pod["metadata"]["annotations"]["example.org/team"] == "eventing"
    assert container(objects, "eventing")["resources"]["requests"] == {"cpu": "500m", "memory": "256Mi"}

    for name in COMPONENTS:
        c = container(objects, name)
        assert c["image"] == "registry.example.org/platform/serving:2.3.4", name
        assert c["imagePullPolicy"] == "Always", name
        pod_spec = workload(objects, name)["spec"]["template"]["spec"]
        assert pod_spec["imagePullSecrets"] == [{"name": "registry-example-org"}], name


def test_default_image_is_the_chart_version_for_components_and_sidecar(renders: Renders) -> None:
    objects = renders("default")
    image = "ghcr.io/serving/serving:0.1.0"
    assert loaded(objects, "controller").queue_sidecar_image == image
    for name in COMPONENTS:
        assert container(objects, name)["image"] == image, name


@pytest.mark.parametrize(("name", "case"), COMPONENT_CASES)
def test_each_component_runs_its_serving_command(renders: Renders, name: str, case: str) -> None:
    c = container(renders(case), name)
    assert tuple(c["args"]) == COMPONENTS[name].args
    assert "command" not in c, "the image's ENTRYPOINT is `serving`"
    assert c["args"][0] in COMMANDS, f"`serving {c['args'][0]}` is not a command of controller.cli"


# --- wiring ------------------------------------------------------------------------------------------------


def service_port(objects: list[Obj], name: str, port: int, component: str | None = None) -> tuple[Obj, Obj]:
    """The Service `name` and its port `port`, checked to send to a pod of the component `component` (by
    default `name`; the label the leader of a Lease puts on its own pod at run time aside)."""
    component = component or name
    service = named(objects, "Service", name)
    pod_labels = workload(objects, component)["spec"]["template"]["metadata"]["labels"]
    selector = {k: v for k, v in service["spec"]["selector"].items() if k != LEADER_LABEL}
    assert selector.items() <= pod_labels.items(), f"Service {name} selects no {component} pod"
    for other in deployed_in(objects):
        if other != component:
            other_labels = workload(objects, other)["spec"]["template"]["metadata"]["labels"]
            assert not selector.items() <= other_labels.items(), f"Service {name} also selects {other} pods"
    ports = [p for p in service["spec"]["ports"] if p["port"] == port]
    assert ports, f"Service {name} has no port {port}"
    return service, ports[0]


def deployed_in(objects: list[Obj]) -> list[str]:
    """The components a rendering runs (by their Deployment's or StatefulSet's name)."""
    return [o["metadata"]["name"] for o in objects if o["kind"] in WORKLOADS]


def url_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None, url
    return parts.hostname, parts.port or 80


@pytest.mark.parametrize("case", CASES)
def test_components_reach_each_other_through_the_chart_services(renders: Renders, case: str) -> None:
    objects = renders(case)
    cluster_domain = values_of(case)["clusterDomain"]

    def host(service: str) -> str:
        return f"{service}.{NAMESPACE}.svc.{cluster_domain}"

    activator_env = component_env(objects, "activator")
    url = urlsplit(activator_env["AUTOSCALER_URL"])
    assert (url.scheme, url.hostname, url.path) == ("ws", host("autoscaler"), "/")
    assert url.port is not None
    _, port = service_port(objects, "autoscaler", url.port)
    assert port_named(container(objects, "autoscaler"), port["targetPort"]) == int(
        component_env(objects, "autoscaler")["AUTOSCALER_PORT"]
    )

    address = component_env(objects, "router")["ACTIVATOR_ADDRESS"]
    activator_host, _, activator_port = address.rpartition(":")
    assert activator_host == host("activator")
    _, port = service_port(objects, "activator", int(activator_port))
    assert port_named(container(objects, "activator"), port["targetPort"]) == int(
        activator_env["ACTIVATOR_PORT"]
    )

    autoscaler_env = component_env(objects, "autoscaler")
    if values_of(case)["autoscaler"]["probeActivator"]:
        assert autoscaler_env["ACTIVATOR_URL"] == f"http://{host('activator')}:{activator_port}"
    else:
        assert "ACTIVATOR_URL" not in autoscaler_env  # autoscaler.probeActivator: false

    router_service, port = service_port(objects, "router", values_of(case)["router"]["service"]["port"])
    assert port_named(container(objects, "router"), port["targetPort"]) == int(
        component_env(objects, "router")["ROUTER_PORT"]
    )
    assert router_service["spec"]["type"] == values_of(case)["router"]["service"]["type"]

    # The activator finds its peers among the ready endpoints of its own Service.
    assert activator_env["SYSTEM_NAMESPACE"] == NAMESPACE
    assert activator_env["POD_IP"] == POD_IP
    service_port(objects, activator_env["ACTIVATOR_SERVICE"], 80)

    controller_env = component_env(objects, "controller")
    assert controller_env["SYSTEM_NAMESPACE"] == NAMESPACE  # where the controller finds the activator Service
    assert controller_env["SERVING_DOMAIN"] == component_env(objects, "router")["SERVING_DOMAIN"]
    # A Service's in-cluster address is an ExternalName alias of the router Service, which answers its Host.
    controller = loaded(objects, "controller")
    router = loaded(objects, "router")
    assert controller.cluster_domain == router.cluster_domain == cluster_domain
    assert named(objects, "Service", controller.router_service)["metadata"]["namespace"] == NAMESPACE
    service_port(objects, controller.router_service, values_of(case)["router"]["service"]["port"], "router")

    if eventing_enabled(case):
        eventing = loaded(objects, "eventing")
        # The eventing component follows the controller's feed through the controller Service, with its token.
        feed_host, feed_port = url_host_port(eventing.platform_url)
        assert feed_host == host("controller")
        _, port = service_port(objects, "controller", feed_port)
        assert (
            port_named(container(objects, "controller"), port["targetPort"]) == controller.eventing_feed_port
        )
        assert eventing.token == controller.eventing_token  # the same Secret and key
        # Events for a Knative Service go through the router Service.
        ingress_host, _, ingress_port = eventing.ingress_address.rpartition(":")
        assert ingress_host == host("router")
        _, port = service_port(objects, "router", int(ingress_port))
        assert port_named(container(objects, "router"), port["targetPort"]) == router.port
        # The addresses the controller writes into Brokers' and GitHubSources' status reach the component.
        addresses = KubeAddresses(controller.system_namespace, controller.cluster_domain)
        for address in (addresses.broker("default", "default"), addresses.webhook("default", "github")):
            service_host, service_port_number = url_host_port(address)
            name, _, rest = service_host.partition(".")
            assert rest == f"{NAMESPACE}.svc.{cluster_domain}", address
            _, port = service_port(objects, name, service_port_number, "eventing")
            assert port_named(container(objects, "eventing"), port["targetPort"]) == eventing.port, address

    hpa = named(objects, "HorizontalPodAutoscaler", "activator")["spec"]["scaleTargetRef"]
    assert (hpa["kind"], hpa["name"]) == ("Deployment", "activator")
    assert "replicas" not in named(objects, "Deployment", "activator")["spec"], "the HPA owns the replicas"
    pdb = named(objects, "PodDisruptionBudget", "activator")["spec"]["selector"]["matchLabels"]
    pod_labels = named(objects, "Deployment", "activator")["spec"]["template"]["metadata"]["labels"]
    assert pdb.items() <= pod_labels.items()
    for name in deployed_in(objects):
        spec = workload(objects, name)["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize(
    ("name", "case"), [param for param in COMPONENT_CASES if param.values[0] != "controller"]
)
def test_probes_and_scrape_annotations_use_the_port_the_component_serves(
    renders: Renders, name: str, case: str
) -> None:
    objects = renders(case)
    c = container(objects, name)
    admin_port = int(component_env(objects, name)[ADMIN_PORT_VAR[name]])
    ready_path = "/healthz" if name == "autoscaler" else "/readyz"  # the autoscaler serves no /readyz
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", ready_path)):
        get = c[probe]["httpGet"]
        assert get["path"] == path, f"{name} {probe}"
        assert port_named(c, get["port"]) == admin_port, f"{name} {probe}"
    annotations = workload(objects, name)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(admin_port)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("case", CASES)
def test_the_controller_serves_only_the_eventing_feed_and_has_no_probe(renders: Renders, case: str) -> None:
    """Its one port is the Eventing feed, with eventing only; a failed reconciler or feed ends the process and
    the kubelet restarts it."""
    objects = renders(case)
    c = container(objects, "controller")
    assert not {"livenessProbe", "readinessProbe", "startupProbe"} & c.keys()
    template = named(objects, "Deployment", "controller")["spec"]["template"]
    assert "prometheus.io/scrape" not in template["metadata"].get("annotations", {})
    services = [o for o in of_kind(objects, "Service") if o["metadata"]["name"] == "controller"]
    if eventing_enabled(case):
        feed_port = values_of(case)["controller"]["eventingFeedPort"]
        assert c["ports"] == [{"name": "http-eventing", "containerPort": feed_port, "protocol": "TCP"}]
        assert loaded(objects, "controller").eventing_feed_port == feed_port
        (service,) = services
        assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
            ("http-eventing", feed_port, "http-eventing")
        ]
    else:
        assert "ports" not in c
        assert services == []


# --- security ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_every_pod_runs_locked_down(renders: Renders, case: str) -> None:
    pods = list(pod_specs(renders(case)))
    assert len(pods) == len(deployed(case)) + 1  # the components and the test pod
    for where, pod in pods:
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, where
        assert context["runAsUser"] == 65532, where
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not {"hostNetwork", "hostPID", "hostIPC"} & pod.keys(), where
        for volume in pod.get("volumes", []):
            assert volume.keys() == {"name", "emptyDir"}, f"{where}: volume {volume['name']}"
        for c in itertools.chain(pod["containers"], pod.get("initContainers", [])):
            at = f"{where} container {c['name']}"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, at
            assert sc["allowPrivilegeEscalation"] is False, at
            assert sc["runAsNonRoot"] is True, at
            assert sc.get("privileged", False) is False, at
            assert sc["capabilities"] == {"drop": ["ALL"]}, at
            assert {"cpu", "memory"} <= c["resources"]["requests"].keys(), at
            assert "memory" in c["resources"]["limits"], at


# --- RBAC --------------------------------------------------------------------------------------------------

Grant = tuple[str, str, str, str]
"""(scope, apiGroup, resource, verb); scope is `cluster` or the namespace of a Role."""

READ: Final = ("get", "list", "watch")
WRITE: Final = ("create", "update", "patch", "delete", "deletecollection")
ALL: Final = READ + WRITE


def grants(scope: str, group: str, resources: tuple[str, ...], verbs: tuple[str, ...]) -> set[Grant]:
    return {(scope, group, r, v) for r in resources for v in verbs}


SERVING_RESOURCES: Final = tuple(
    f"{kind}{sub}"
    for kind in ("services", "configurations", "revisions", "routes")
    for sub in ("", "/status", "/finalizers")
)
LEASES: Final = grants(
    NAMESPACE, "coordination.k8s.io", ("leases",), ("get", "list", "watch", "create", "update", "patch")
)

SOURCES: Final = ("pingsources", "githubsources", "containersources", "sinkbindings")
EVENTING_GRANTS: Final = (
    grants("cluster", "eventing.knative.dev", ("brokers", "triggers"), READ)
    | grants("cluster", "eventing.knative.dev", ("brokers/status", "triggers/status"), ("update", "patch"))
    | grants("cluster", "sources.knative.dev", SOURCES, READ)
    | grants("cluster", "sources.knative.dev", tuple(f"{s}/status" for s in SOURCES), ("update", "patch"))
    | grants("cluster", "", ("configmaps", "secrets"), READ)
    | grants("cluster", "apps", ("statefulsets", "daemonsets"), (*READ, "patch"))
    | grants("cluster", "batch", ("cronjobs",), (*READ, "patch"))
)
"""The controller's with eventing: it reads the Eventing objects and the ConfigMaps and Secrets they name, and
writes their status; the ContainerSources' Deployments and the SinkBindings' variables in Deployments are
written with its grant on Deployments, their variables in StatefulSets, DaemonSets and CronJobs (server-side
apply: a patch) with one of their own."""

EXPECTED_GRANTS: Final = {
    "controller": grants("cluster", "serving.knative.dev", SERVING_RESOURCES, ALL)
    | grants("cluster", "apps", ("deployments",), READ + WRITE[:-1])
    | grants("cluster", "", ("services",), READ + WRITE[:-1])
    | grants("cluster", "discovery.k8s.io", ("endpointslices",), READ)
    | grants("cluster", "", ("events",), ("create", "patch"))
    | LEASES,
    "autoscaler": grants("cluster", "serving.knative.dev", ("revisions",), READ)
    | grants("cluster", "serving.knative.dev", ("revisions/status",), ("get", "update", "patch"))
    | grants("cluster", "discovery.k8s.io", ("endpointslices",), READ)
    | grants("cluster", "apps", ("deployments/scale",), ("get", "update", "patch"))
    | grants("cluster", "", ("pods",), ("get", "list", "watch", "patch"))
    | LEASES,
    "activator": grants("cluster", "serving.knative.dev", ("revisions",), READ)
    | grants("cluster", "discovery.k8s.io", ("endpointslices",), READ)
    | grants("cluster", "", ("services", "endpoints"), READ),
    "router": grants("cluster", "serving.knative.dev", ("routes", "revisions"), READ)
    | grants("cluster", "discovery.k8s.io", ("endpointslices",), READ),
}


def granted(objects: list[Obj]) -> dict[str, set[Grant]]:
    """What each ServiceAccount (by `namespace/name`) may do, from every binding the chart renders."""
    roles: dict[tuple[str, str, str], list[Obj]] = {}
    for obj in objects:
        if obj["kind"] in ("ClusterRole", "Role"):
            roles[obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]] = obj["rules"]
    found: dict[str, set[Grant]] = {}
    for binding in objects:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace", "")
        role_namespace = namespace if ref["kind"] == "Role" else ""
        rules = roles[ref["kind"], role_namespace, ref["name"]]
        scope = namespace if binding["kind"] == "RoleBinding" else "cluster"
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount", binding["metadata"]["name"]
            account = found.setdefault(f"{subject['namespace']}/{subject['name']}", set())
            for rule in rules:
                assert "*" not in rule["verbs"], ref["name"]
                assert "*" not in rule["resources"], ref["name"]
                for group in rule["apiGroups"]:
                    account |= grants(scope, group, tuple(rule["resources"]), tuple(rule["verbs"]))
    return found


@pytest.mark.parametrize("case", ["default", "no-eventing"])
def test_each_component_is_granted_exactly_what_it_needs(renders: Renders, case: str) -> None:
    """The eventing component is bound to nothing: it reads the controller's feed, not the API."""
    found = granted(renders(case))
    expected = {f"{NAMESPACE}/{name}": rules for name, rules in EXPECTED_GRANTS.items()}
    if eventing_enabled(case):
        expected[f"{NAMESPACE}/controller"] = expected[f"{NAMESPACE}/controller"] | EVENTING_GRANTS
    assert found == expected


@pytest.mark.parametrize("case", ["default", "no-eventing"])
def test_the_controller_gets_the_eventing_crds_it_watches(renders: Renders, case: str) -> None:
    """Every Eventing kind the controller watches has its CRD in the chart, at the version it reads, with the
    status subresource it writes; and it is granted the watch only when eventing is on."""
    objects = renders(case)
    crds = {
        (o["spec"]["group"], o["spec"]["names"]["plural"]): o
        for o in of_kind(objects, "CustomResourceDefinition")
    }
    found = granted(objects)[f"{NAMESPACE}/controller"]
    for resource in EVENT_RESOURCES:
        crd = crds[resource.group, resource.plural]
        versions = {v["name"]: v for v in crd["spec"]["versions"]}
        assert versions[resource.version]["served"] is True, resource.plural
        assert "status" in versions[resource.version].get("subresources", {}), resource.plural
        watch = ("cluster", resource.group, resource.plural, "watch")
        assert (watch in found) == eventing_enabled(case), resource.plural


def test_only_the_controller_writes_workloads_and_the_router_only_reads(renders: Renders) -> None:
    found = granted(renders("default"))

    def can(name: str, group: str, resource: str, verb: str) -> bool:
        return any(g[1:] == (group, resource, verb) for g in found[f"{NAMESPACE}/{name}"])

    for name in ("autoscaler", "activator", "router"):
        for verb in WRITE:
            assert not can(name, "apps", "deployments", verb), f"{name} may {verb} Deployments"
            assert not can(name, "", "services", verb), f"{name} may {verb} Services"
    assert {g[3] for g in found[f"{NAMESPACE}/router"]} <= set(READ), "the router may write"
    assert {g[3] for g in found[f"{NAMESPACE}/activator"]} <= set(READ), "the activator may write"
    secrets = {(account, g[3]) for account, grant in found.items() for g in grant if g[2] == "secrets"}
    assert secrets == {(f"{NAMESPACE}/controller", verb) for verb in READ}, (
        "only the controller reads Secrets"
    )
    assert not any(g[2] == "secrets" for g in granted(renders("no-eventing"))[f"{NAMESPACE}/controller"])


@pytest.mark.parametrize("case", CASES)
def test_each_pod_runs_as_its_own_service_account(renders: Renders, case: str) -> None:
    """Each component's pod has its own ServiceAccount; the eventing component's mounts no token (it reads
    the controller's feed, never the API)."""
    objects = renders(case)
    accounts = {o["metadata"]["name"]: o for o in of_kind(objects, "ServiceAccount")}
    assert set(accounts) == set(deployed(case))
    for name in deployed(case):
        pod = workload(objects, name)["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == name
        uses_api = name != "eventing"
        assert pod["automountServiceAccountToken"] is uses_api, name
        assert accounts[name]["automountServiceAccountToken"] is uses_api, name
    test_pod = of_kind(objects, "Pod")[0]["spec"]
    assert test_pod["automountServiceAccountToken"] is False, "the test pod needs no API access"
    assert "serviceAccountName" not in test_pod


# --- eventing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_eventing_renders_only_when_enabled(renders: Renders, case: str) -> None:
    """`eventing.enabled: false` renders none of its objects and the controller neither watches the Eventing
    objects nor serves their feed; the CRDs are installed either way (Helm does not template crds/)."""
    objects = renders(case)
    enabled = eventing_enabled(case)
    rendered = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert rendered & EVENTING_OBJECTS == (EVENTING_OBJECTS if enabled else set())
    components = {o["metadata"]["labels"].get("app.kubernetes.io/component") for o in objects}
    assert ("eventing" in components) == enabled
    env = component_env(objects, "controller")
    assert env["EVENTING"] == ("true" if enabled else "false")
    feed = {"EVENTING_FEED_PORT", "EVENTING_TOKEN"}
    assert env.keys() & feed == (feed if enabled else set())
    assert loaded(objects, "controller").eventing is enabled
    crds = {o["metadata"]["name"] for o in of_kind(objects, "CustomResourceDefinition")}
    assert {"brokers.eventing.knative.dev", "triggers.eventing.knative.dev"} <= crds


@pytest.mark.parametrize("case", [c for c in CASES if eventing_enabled(c)])
def test_the_eventing_component_is_one_pod_with_its_logs_on_a_claim(renders: Renders, case: str) -> None:
    """The embedded Brokers' logs are one node's disk: exactly one replica of a StatefulSet, its data
    directory on the claim `data-eventing-0` (so it outlives the pod), the claim's labels fixed (a claim
    template cannot change on upgrade)."""
    objects = renders(case)
    values = values_of(case)["eventing"]
    stateful = named(objects, "StatefulSet", "eventing")["spec"]
    assert stateful["replicas"] == 1
    # A StatefulSet's rolling update stops the old pod before the new one starts.
    assert stateful["updateStrategy"]["type"] == "RollingUpdate"
    governing = named(objects, "Service", stateful["serviceName"])["spec"]
    assert governing["clusterIP"] == "None"
    assert governing["selector"].items() <= stateful["template"]["metadata"]["labels"].items()

    (claim,) = stateful["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["metadata"]["labels"] == stateful["selector"]["matchLabels"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == values["storage"]["size"]
    if values["storage"]["className"]:
        assert claim["spec"]["storageClassName"] == values["storage"]["className"]
    else:
        assert "storageClassName" not in claim["spec"], "an empty class would turn dynamic provisioning off"
    mounts = {m["name"]: m["mountPath"] for m in container(objects, "eventing")["volumeMounts"]}
    assert mounts["data"] == loaded(objects, "eventing").data_dir == "/var/lib/serving/eventing"
    pod = stateful["template"]["spec"]
    assert "data" not in {v["name"] for v in pod["volumes"]}, "the data directory must be the claim"
    assert pod["terminationGracePeriodSeconds"] == values["terminationGracePeriodSeconds"]


# --- invalid values ----------------------------------------------------------------------------------------

INVALID: Final = [
    pytest.param({"activator": {"queueDepth": "lots"}}, "queueDepth", id="queue-depth-not-a-number"),
    pytest.param({"router": {"service": {"type": "Bogus"}}}, "/router/service/type", id="service-type"),
    pytest.param({"domain": "Not A Domain"}, "/domain", id="domain"),
    pytest.param({"router": {"trustedProxies": ["everyone"]}}, "trustedProxies", id="trusted-proxy"),
    pytest.param({"router": {"port": 70000}}, "/router/port", id="port-out-of-range"),
    pytest.param({"activator": {"logLevel": "verbose"}}, "logLevel", id="log-level"),
    pytest.param({"activator": {"drainTimeout": "soon"}}, "drainTimeout", id="duration"),
    pytest.param({"autoscaler": {"scrapeTimeout": "0s"}}, "scrapeTimeout", id="zero-scrape-timeout"),
    pytest.param({"autoscaler": {"config": {"stable-windw": "60s"}}}, "stable-windw", id="autoscaler-key"),
    pytest.param({"activator": {"queueDepht": 5}}, "queueDepht", id="misspelt-value"),
    pytest.param(
        {"controller": {"replicas": 2, "leaderElect": False}}, "/controller/replicas", id="no-lease"
    ),
    pytest.param(
        {"autoscaler": {"replicas": 2, "leaderElect": False}},
        "/autoscaler/replicas",
        id="no-autoscaler-lease",
    ),
    pytest.param({"image": {"digest": "latest"}}, "/image/digest", id="digest"),
    pytest.param({"eventing": {"enabled": "yes"}}, "/eventing/enabled", id="eventing-enabled"),
    pytest.param({"eventing": {"storage": {"size": "lots"}}}, "/eventing/storage/size", id="storage-size"),
    pytest.param({"eventing": {"storage": {"className": "Fast SSD"}}}, "className", id="storage-class"),
    pytest.param({"controller": {"eventingFeedPort": 0}}, "eventingFeedPort", id="feed-port"),
]
"""Values values.schema.json refuses: `helm lint`, `helm template` and `helm install` fail, naming them."""

CROSS_CHECKED: Final = [
    pytest.param(
        {"activator": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}},
        "activator.autoscaling.minReplicas (5) must not exceed activator.autoscaling.maxReplicas (2)",
        id="hpa-bounds",
    ),
    pytest.param(
        {"activator": {"adminPort": 8012}},
        "activator.port and activator.adminPort are both 8012",
        id="same-ports",
    ),
    pytest.param(
        {"router": {"service": {"type": "ClusterIP", "nodePort": 30080}}},
        "router.service.nodePort",
        id="node-port",
    ),
    pytest.param(
        {"eventing": {"adminPort": 8080}},
        "eventing.port and eventing.adminPort are both 8080",
        id="same-eventing-ports",
    ),
]
"""Relations between values a JSON schema cannot state, checked by the templates (`fail`): `helm template` and
`helm install` fail; `helm lint` only logs the message (Helm renders leniently when linting)."""


@pytest.mark.parametrize("leader_elect", [True, False])
def test_the_autoscaler_service_reaches_only_the_leader(
    helm: Helm, tmp_path: Path, leader_elect: bool
) -> None:
    """With leader election the Service selects the pod the Lease holder labels, and a rollout starts the new
    pod beside the old (it waits as a standby); without it, one replica, replaced (never two at once)."""
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"autoscaler": {"leaderElect": leader_elect}}))
    objects = helm.render(Values(files=(path,)))
    selector = named(objects, "Service", "autoscaler")["spec"]["selector"]
    deployment = named(objects, "Deployment", "autoscaler")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert {
        k: v for k, v in selector.items() if k != "serving.knative.dev/leader"
    }.items() <= pod_labels.items()
    if leader_elect:
        assert selector["serving.knative.dev/leader"] == "serving-autoscaler"
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
        env = {e["name"]: e for e in container(objects, "autoscaler")["env"]}
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    else:
        assert LEADER_LABEL not in selector
        assert deployment["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize(("values", "needle"), INVALID)
def test_an_invalid_value_is_refused_naming_it(helm: Helm, tmp_path: Path, values: Obj, needle: str) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    for result in (helm.lint(Values(files=(path,))), helm.template(Values(files=(path,)))):
        output = result.stdout + result.stderr
        assert result.returncode != 0, f"accepted {values}:\n{output}"
        assert needle in output, output


@pytest.mark.parametrize(("values", "needle"), CROSS_CHECKED)
def test_inconsistent_values_are_refused_naming_them(
    helm: Helm, tmp_path: Path, values: Obj, needle: str
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = helm.template(Values(files=(path,)))
    assert result.returncode != 0, f"accepted {values}:\n{result.stdout}"
    assert needle in result.stderr, result.stderr
    linted = helm.lint(Values(files=(path,)))
    assert needle in linted.stdout + linted.stderr


def test_a_set_string_of_a_number_is_refused(helm: Helm) -> None:
    result = helm.template(Values(strings=(("activator.queueDepth", "lots"),)))
    assert result.returncode != 0
    assert "/activator/queueDepth" in result.stderr, result.stderr


# --- schema, README, NOTES ---------------------------------------------------------------------------------


def test_schema_knows_every_config_autoscaler_key() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    keys = schema["properties"]["autoscaler"]["properties"]["config"]["properties"]
    assert sorted(keys) == sorted(CONFIG_KEYS)


OPAQUE: Final = frozenset(
    {"resources", "podAnnotations", "nodeSelector", "tolerations", "affinity", "annotations", "config"}
)
"""Values passed through whole (Kubernetes fields or key maps); README documents them as one row."""


def value_paths(values: Obj, prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key not in OPAQUE:
            yield from value_paths(value, f"{path}.")
        else:
            yield path


def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    rows = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert sorted(set(value_paths(values)) - rows) == []
    dotted = {row for row in rows if "." in row}  # the other tables' first cells name components
    assert sorted(dotted - set(value_paths(values))) == [], "README documents values the chart lacks"


def test_readme_names_only_variables_a_contract_reads() -> None:
    readme = (CHART / "README.md").read_text()
    every = set().union(*(contract_env_names(c.contract) for c in COMPONENTS.values()))
    named_in_rows = set(re.findall(r"^\| `[^`]+` \|.*?\| `([A-Z][A-Z0-9_]+)`", readme, flags=re.MULTILINE))
    assert named_in_rows, "README's value table names no variable"
    assert named_in_rows <= every, sorted(named_in_rows - every)


def test_notes_tell_how_to_apply_a_service_and_find_its_url(helm: Helm) -> None:
    result = helm.run(
        "install",
        "serving",
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        "--values",
        str(CUSTOM_VALUES),
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout[result.stdout.index("NOTES:") :]
    assert "kubectl apply -f examples/helloworld-python/service.yaml" in notes
    assert "kubectl get ksvc" in notes
    assert "helloworld-python.default.apps.example.org" in notes
    assert "helm test serving" in notes


# --- helm test ---------------------------------------------------------------------------------------------


def test_helm_test_hook_requests_the_hello_world_example_through_the_router(renders: Renders) -> None:
    pod = of_kind(renders("default"), "Pod")[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    example = yaml.safe_load((ROOT / "examples" / "helloworld-python" / "service.yaml").read_text())
    env = {e["name"]: e["value"] for e in example["spec"]["template"]["spec"]["containers"][0]["env"]}
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"]
    url, host, expected, _ = command[3:]
    assert url == f"http://router.{NAMESPACE}.svc.cluster.local:80/"
    assert host == f"{example['metadata']['name']}.{example['metadata']['namespace']}.example.com"
    assert expected == f"Hello {env['TARGET']}!"  # the example app answers `Hello {TARGET}!`


class _Hello(http.server.BaseHTTPRequestHandler):
    """The hello-world Service behind a router: 200 for its Host, 404 for any other."""

    def do_GET(self) -> None:
        known = self.headers.get("Host") == "helloworld-python.default.example.com"
        body = b"Hello Python Sample v1!\n" if known else b"no such service\n"
        self.send_response(200 if known else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # `format`: the base class's parameter name
        pass


@pytest.fixture
def hello_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(
    ("host", "code", "says"),
    [
        pytest.param("helloworld-python.default.example.com", 0, "Hello Python Sample v1!", id="found"),
        pytest.param("missing.default.example.com", 1, "is the Service applied?", id="not-applied"),
    ],
)
def test_the_hook_script_checks_the_body_behind_the_host(
    hello_server: str, host: str, code: int, says: str
) -> None:
    script = (CHART / "files" / "check-service.py").read_text()
    result = subprocess.run(
        [sys.executable, "-c", script, hello_server, host, "Hello Python Sample v1!", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == code, result.stdout + result.stderr
    assert says in result.stdout + result.stderr


# --- the image ---------------------------------------------------------------------------------------------


def test_the_image_runs_serving_as_the_user_the_chart_requires() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    final_stage = dockerfile.split("\nFROM ")[-1]
    assert re.search(r"^USER 65532:65532$", final_stage, flags=re.MULTILINE)
    assert 'ENTRYPOINT ["serving"]' in final_stage
    # Knative starts its queue-sidecar-image without arguments: the image must then be the queue-proxy.
    assert 'CMD ["queue-proxy"]' in final_stage
