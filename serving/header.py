"""Header names and values of Knative's data-plane contract, as constants.

Names are lower-case because the forwarding engine compares raw header names case-insensitively after
lower-casing them once.
"""

import math
from typing import Final

# Set by the ingress to name the target revision; stripped before the user container.
REVISION: Final = "knative-serving-revision"
NAMESPACE: Final = "knative-serving-namespace"

# Probe headers.
NETWORK_PROBE: Final = "k-network-probe"
NETWORK_HASH: Final = "k-network-hash"
PROBE_TOKEN: Final = "k-network-probe-token"
"""The platform's proof that a probe comes from it (kubelet, activator, local supervisor); see
`serving.contract.probe.probe_token`. Its `k-network-` prefix makes it platform-only at the ingress."""
KUBELET_PROBE: Final = "k-kubelet-probe"
PROBE_QUEUE: Final = "queue"
PROBE_ACTIVATOR: Final = "activator"
PROBE_PROBE: Final = "probe"

# User agents that mark a request as a health check.
KUBE_PROBE_UA_PREFIX: Final = "kube-probe/"
ACTIVATOR_PROBE_UA: Final = "Knative-Activator-Probe"
AUTOSCALING_PROBE_UA: Final = "Knative-Autoscaling-Probe"

# Set by the activator: the original Host, and a mark that the request was proxied.
ORIGINAL_HOST: Final = "k-original-host"
ORIGINAL_USER_AGENT: Final = "k-original-user-agent"
"""A client's probe-like User-Agent (`kube-probe/...`) as the ingress carries it past the activator and the
queue-proxy, which would answer a probe themselves; the queue-proxy restores it for the app."""
PROXY_REQUEST: Final = "k-proxy-request"
PROXY_REQUEST_ACTIVATOR: Final = "activator"

# On a queue-proxy's 502 when its app refused the connection: nothing reached the app, so the activator or
# the router may try another pod. The engines in front consume or drop it (an app's own is dropped too).
APP_REFUSED: Final = "k-app-refused"

# Cold-start visibility: `Server-Timing: activator;dur=<ms>` on responses that waited in the activator.
SERVER_TIMING: Final = "server-timing"

# Standard headers the proxies read or write.
HOST: Final = "host"
CONNECTION: Final = "connection"
PROXY_CONNECTION: Final = "proxy-connection"  # an old name of Connection, which llhttp reads as one
UPGRADE: Final = "upgrade"
HTTP2_SETTINGS: Final = "http2-settings"
CONTENT_LENGTH: Final = "content-length"
TRANSFER_ENCODING: Final = "transfer-encoding"
FORWARDED: Final = "forwarded"
X_FORWARDED_FOR: Final = "x-forwarded-for"
X_FORWARDED_PROTO: Final = "x-forwarded-proto"
X_FORWARDED_HOST: Final = "x-forwarded-host"
RETRY_AFTER: Final = "retry-after"
USER_AGENT: Final = "user-agent"

# A gRPC call's deadline, relative to when it was sent: `<1-8 digits><unit>` (gRPC over HTTP/2).
GRPC_TIMEOUT: Final = "grpc-timeout"
_GRPC_UNITS: Final = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}

# Hop-by-hop headers (RFC 9110 section 7.6.1), never forwarded; those named in `Connection` are dropped too.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        PROXY_CONNECTION,
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


# Headers that frame, route or describe a request as a proxy forwards it: a client's `Connection` tokens may
# never make a proxy drop them (dropping Content-Length while relaying the body is request smuggling).
_PROTECTED: Final = frozenset(
    {
        HOST,
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        FORWARDED,
        X_FORWARDED_FOR,
        X_FORWARDED_PROTO,
        X_FORWARDED_HOST,
        ORIGINAL_HOST,
        ORIGINAL_USER_AGENT,
        PROXY_REQUEST,
        APP_REFUSED,
    }
)
_PROTECTED_PREFIXES: Final = ("knative-serving-", "k-network-", "k-kubelet-")


def is_protected(name: str) -> bool:
    """Whether `name` (lower-case) is a header that `Connection` tokens cannot remove."""
    return name in _PROTECTED or name.startswith(_PROTECTED_PREFIXES)


_PROBE_AGENTS: Final = (KUBE_PROBE_UA_PREFIX, ACTIVATOR_PROBE_UA, AUTOSCALING_PROBE_UA)


def is_probe_agent(user_agent: str) -> bool:
    """Whether a User-Agent is one the platform's hops take for a health check."""
    return user_agent.startswith(_PROBE_AGENTS)


def is_health_check(user_agent: str, has_kubelet_probe: bool) -> bool:
    """Whether a request is a health check that the proxy answers itself (Knative's rule)."""
    return has_kubelet_probe or user_agent.startswith(_PROBE_AGENTS)


def grpc_timeout(value: str) -> float | None:
    """Seconds in a `grpc-timeout` value (`100m`, `5S`), or None when it is malformed (then it is ignored,
    as gRPC servers do, and only the revision timeout applies)."""
    value = value.strip()
    digits = value[:-1]
    unit = _GRPC_UNITS.get(value[-1:])
    if unit is None or not 0 < len(digits) <= 8 or not digits.isdigit() or not digits.isascii():
        return None
    return int(digits) * unit


def sooner_grpc_timeout(value: str | None, timeout: float) -> float | None:
    """A gRPC call's own deadline (a `grpc-timeout` value, or None without one) in seconds when it is sooner
    than `timeout` (the revision's), else None: the rule the activator and the queue-proxy share."""
    requested = None if value is None else grpc_timeout(value)
    return requested if requested is not None and requested < timeout else None


def grpc_timeout_value(seconds: float) -> str:
    """A `grpc-timeout` value for `seconds` (milliseconds, rounded up; at most 8 digits)."""
    return f"{min(max(math.ceil(seconds * 1000), 1), 99_999_999)}m"
