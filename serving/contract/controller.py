"""The Kubernetes controller's contract (`serving controller --kubernetes`): every setting it reads from its
environment, one variable per field. The Helm chart sets them; `controller.kube` loads them.

Revision garbage collection follows Knative's `config-gc`: a revision that no route references is deleted
once it is older than `GC_RETAIN_SINCE_CREATE_TIME` and has been unreferenced for longer than
`GC_RETAIN_SINCE_LAST_ACTIVE_TIME`, keeping at least `GC_MIN_NON_ACTIVE_REVISIONS` of them and at most
`GC_MAX_NON_ACTIVE_REVISIONS` (a negative value turns a bound off, as Knative's `disabled` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from serving.config import (
    EnvContract,
    format_int,
    format_str,
    parse_bool,
    parse_int,
    parse_log_format,
    parse_log_level,
    parse_non_negative_duration,
    parse_non_negative_int,
    parse_port,
    parse_str,
    setting,
)
from serving.contract.tracing import OFF, Tracing


def parse_domain(text: str) -> str:
    value = text.strip().lower().rstrip(".")
    labels = value.split(".")
    if not value or any(not label or len(label) > 63 for label in labels):
        raise ValueError(f"{text!r} is not a DNS domain")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerConfig(EnvContract):
    """Everything the Kubernetes controller reads; `to_env()` renders it as the chart sets it."""

    system_namespace: str = setting("SYSTEM_NAMESPACE", parse_str, "knative-serving")
    """The namespace the platform's components run in (the activator's Service lives there)."""
    domain: str = setting("SERVING_DOMAIN", parse_domain, "example.com", formatter=format_str)
    """Services answer on `{service}.{namespace}.{domain}` (Knative's default domain is example.com)."""
    queue_sidecar_image: str = setting("QUEUE_SIDECAR_IMAGE", parse_str, "ghcr.io/serving/serving:latest")
    """Image of the queue-proxy container added to every revision pod."""
    queue_sidecar_cpu: str = setting("QUEUE_SIDECAR_CPU_REQUEST", parse_str, "25m")
    """CPU request of the queue-proxy container (Knative's default)."""
    queue_sidecar_memory: str = setting("QUEUE_SIDECAR_MEMORY_REQUEST", parse_str, "50Mi")
    """Memory request of the queue-proxy container."""
    drain_seconds: float = setting("QUEUE_DRAIN_TIMEOUT", parse_non_negative_duration, 30.0)
    """How long a terminating queue-proxy keeps serving before it stops; added to a revision's timeout to
    give its pods' `terminationGracePeriodSeconds`."""
    gc_retain_since_create_time: float = setting(
        "GC_RETAIN_SINCE_CREATE_TIME", parse_non_negative_duration, 48 * 3600.0
    )
    gc_retain_since_last_active_time: float = setting(
        "GC_RETAIN_SINCE_LAST_ACTIVE_TIME", parse_non_negative_duration, 15 * 3600.0
    )
    gc_min_non_active_revisions: int = setting("GC_MIN_NON_ACTIVE_REVISIONS", parse_non_negative_int, 20)
    gc_max_non_active_revisions: int = setting(
        "GC_MAX_NON_ACTIVE_REVISIONS", parse_int, 1000, formatter=format_int
    )
    """-1 turns the upper bound off."""
    probe_secret: str = setting("SERVING_PROBE_SECRET", parse_str, "")
    """The installation's probe secret: each revision's queue-proxies require the token derived from it on
    probes, and its Deployment's readiness probe sends it (`serving.contract.probe`). Empty: no token."""
    leader_elect: bool = setting("LEADER_ELECT", parse_bool, True)
    """Take a `Lease` before reconciling, so that two replicas can run (one acts, one waits)."""
    pod_name: str = setting("POD_NAME", parse_str, "controller")
    """This replica's identity in the lease."""
    cluster_domain: str = setting("CLUSTER_DOMAIN", parse_domain, "cluster.local", formatter=format_str)
    """DNS suffix of in-cluster addresses: a Service's `status.address.url` is
    `http://{name}.{namespace}.svc.{cluster domain}`, a Broker's is the eventing component's
    `broker-ingress` Service in `SYSTEM_NAMESPACE`."""
    router_service: str = setting("ROUTER_SERVICE", parse_str, "router")
    """The router's Service in `SYSTEM_NAMESPACE` (the chart's `router`): each Route's ExternalName Service
    `{service}` points at it, so a Service's in-cluster address reaches the router."""
    eventing: bool = setting("EVENTING", parse_bool, False)
    """Reconcile Eventing's Brokers, Triggers, PingSources and GitHubSources (their CRDs must be installed)
    and serve their resolved form to the eventing component on `EVENTING_FEED_PORT`."""
    eventing_feed_port: int = setting("EVENTING_FEED_PORT", parse_port, 8090, formatter=format_int)
    """`GET /v1/eventing?watch=true`: the Eventing objects with every address resolved, one JSON line per
    change, for the eventing component's `SERVING_PLATFORM_URL`; every replica serves it."""
    eventing_token: str = setting("EVENTING_TOKEN", parse_str, "")
    """Required as `Serving-Eventing-Token` on that feed (it carries webhook secrets); the chart's
    `serving-eventing-token` Secret gives it to the controller and the eventing component."""
    log_format: Literal["text", "json"] = setting("LOG_FORMAT", parse_log_format, "json")
    log_level: str = setting("LOG_LEVEL", parse_log_level, "INFO")
    tracing: Tracing = OFF
    """Tracing of the revisions' queue-proxies, passed on to each one's environment; off by default."""
