"""The readiness probe the queue-proxy runs against the app, as carried by `SERVING_READINESS_PROBE`.

The variable holds the user container's Kubernetes `Probe` as JSON (Knative passes it this way). The
`tcpSocket`, `httpGet` and `grpc` actions are supported (`exec` is not: the queue-proxy runs beside the app,
not inside it); a probe with `periodSeconds` 0 or unset is *aggressive*.
`format_probe` writes a `ProbeSpec` back as the smallest Probe JSON that `parse_probe` reads to the same spec.

It also holds the probe token: a queue-proxy given `SERVING_PROBE_TOKEN` answers a probe-like request itself
only when it carries that token in `K-Network-Probe-Token`. The platform derives each revision's token from a
per-installation secret, so anything else that reaches a pod (another pod, a client past the ingress) is an
ordinary request for the app, whatever its User-Agent or `K-Network-Probe` say, and a token read from one
revision's Deployment proves nothing to another's pods.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Final, Literal

# Kubernetes defaults for the Probe fields we read.
_DEFAULT_TIMEOUT_SECONDS: Final = 1.0
_DEFAULT_FAILURE_THRESHOLD: Final = 3
_DEFAULT_SUCCESS_THRESHOLD: Final = 1
_NUMBERS: Final = (
    "initialDelaySeconds",
    "timeoutSeconds",
    "periodSeconds",
    "successThreshold",
    "failureThreshold",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeSpec:
    """What to probe and how often; `port` None means the user port (Knative rewrites probe ports to it)."""

    kind: Literal["tcp", "http", "grpc"] = "tcp"
    host: str = "127.0.0.1"
    """The address to probe; the app runs beside the queue-proxy, so loopback unless the probe names one."""
    port: int | None = None
    path: str = "/"
    scheme: Literal["http", "https"] = "http"
    headers: tuple[tuple[str, str], ...] = ()
    """Extra request headers (`httpGet.httpHeaders`), sent after the default `User-Agent`."""
    service: str = ""
    """`grpc.service`: the name asked of the gRPC health service (empty: the server as a whole)."""
    timeout: float = _DEFAULT_TIMEOUT_SECONDS
    """Seconds allowed per attempt outside aggressive mode (Kubernetes default 1 s)."""
    period: float = 0.0
    """Seconds between attempts; 0 selects aggressive mode (Knative's default for its own probe)."""
    success_threshold: int = _DEFAULT_SUCCESS_THRESHOLD
    """Consecutive successes before the app counts as ready (Kubernetes default 1)."""
    failure_threshold: int = _DEFAULT_FAILURE_THRESHOLD
    """Consecutive failures before a ready app counts as not ready (Kubernetes default 3)."""

    @property
    def aggressive(self) -> bool:
        return self.period == 0

    def resolved_port(self, user_port: int) -> int:
        return self.port if self.port is not None else user_port


def _number(probe: dict[str, Any], name: str, problems: list[str]) -> float | None:
    value = probe.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        problems.append(f"{name} must be a number, 0 or more (got {value!r})")
        return None
    return float(value)


def _port(action: dict[str, Any], problems: list[str]) -> int | None:
    """A numeric port other than 0 is kept; a named port or 0 means the user port."""
    value = action.get("port")
    if value is None or isinstance(value, str) or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        problems.append(f"port must be 1-65535 or a port name (got {value!r})")
        return None
    return value


def _headers(action: dict[str, Any], problems: list[str]) -> tuple[tuple[str, str], ...]:
    raw = action.get("httpHeaders") or []
    if not isinstance(raw, list):
        problems.append("httpGet.httpHeaders must be a list of {name, value}")
        return ()
    headers: list[tuple[str, str]] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            problems.append(f"httpGet.httpHeaders entry {item!r} needs a non-empty name")
            continue
        value = item.get("value", "")
        headers.append((item["name"], value if isinstance(value, str) else str(value)))
    return tuple(headers)


def _action(probe: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """The fields of the one probe action (`tcpSocket`, `httpGet` or `grpc`) as ProbeSpec keyword
    arguments."""
    present = [key for key in ("tcpSocket", "httpGet", "exec", "grpc") if probe.get(key) is not None]
    if len(present) > 1:
        problems.append(f"a probe has one action; got {', '.join(present)}")
        return {}
    if not present or present == ["tcpSocket"]:
        tcp = probe.get("tcpSocket") or {}
        if not isinstance(tcp, dict):
            problems.append("tcpSocket must be an object")
            return {}
        return {"kind": "tcp", "host": tcp.get("host") or "127.0.0.1", "port": _port(tcp, problems)}
    if present == ["httpGet"]:
        http = probe["httpGet"]
        if not isinstance(http, dict):
            problems.append("httpGet must be an object")
            return {}
        scheme = str(http.get("scheme") or "HTTP").lower()
        if scheme not in ("http", "https"):
            problems.append(f"httpGet.scheme must be HTTP or HTTPS (got {http.get('scheme')!r})")
        path = http.get("path") or "/"
        if not isinstance(path, str):
            problems.append("httpGet.path must be a string")
            path = "/"
        return {
            "kind": "http",
            "host": http.get("host") or "127.0.0.1",
            "port": _port(http, problems),
            "path": path if path.startswith("/") else "/" + path,
            "scheme": scheme if scheme in ("http", "https") else "http",
            "headers": _headers(http, problems),
        }
    if present == ["grpc"]:
        grpc = probe["grpc"]
        if not isinstance(grpc, dict):
            problems.append("grpc must be an object")
            return {}
        service = grpc.get("service") or ""
        if not isinstance(service, str):
            problems.append("grpc.service must be a string")
            service = ""
        return {"kind": "grpc", "port": _port(grpc, problems), "service": service}
    problems.append(
        f"{present[0]} probes are not supported by the queue-proxy (use tcpSocket, httpGet or grpc)"
    )
    return {}


def parse_probe(text: str) -> ProbeSpec:
    """Parse a Kubernetes Probe from JSON; raises ValueError naming every problem at once."""
    if not text.strip():
        return ProbeSpec()
    try:
        probe = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(probe, dict):
        raise ValueError("must be a JSON object (a Kubernetes Probe)")
    problems: list[str] = []
    fields = _action(probe, problems)
    numbers = {name: _number(probe, name, problems) for name in _NUMBERS}
    for name in ("successThreshold", "failureThreshold"):
        value = numbers[name]
        # 0 is Kubernetes' "not set": the API server defaults it (success 1, failure 3), as done below.
        if value is not None and (value < 0 or value != int(value)):
            problems.append(f"{name} must be a whole number, 0 (the default) or more (got {value:g})")
    if problems:
        raise ValueError("; ".join(problems))
    timeout, period = numbers["timeoutSeconds"], numbers["periodSeconds"]
    success, failure = numbers["successThreshold"], numbers["failureThreshold"]
    return ProbeSpec(
        **fields,
        timeout=timeout if timeout else _DEFAULT_TIMEOUT_SECONDS,
        period=period or 0.0,
        success_threshold=int(success) if success else _DEFAULT_SUCCESS_THRESHOLD,
        failure_threshold=int(failure) if failure else _DEFAULT_FAILURE_THRESHOLD,
    )


def format_probe(spec: ProbeSpec) -> str:
    """The smallest Kubernetes Probe JSON that `parse_probe` reads back to `spec`; empty for the default.

    Only Kubernetes defaults are left out, so the text stays what a person would write (`{"httpGet":
    {"path": "/healthz"}}`). Exact for every spec `parse_probe` can produce.
    """
    if spec == ProbeSpec():
        return ""
    action: dict[str, Any] = {}
    if spec.host != "127.0.0.1":
        action["host"] = spec.host
    if spec.port is not None:
        action["port"] = spec.port
    probe: dict[str, Any] = {}
    if spec.kind == "http":
        if spec.path != "/":
            action["path"] = spec.path
        if spec.scheme != "http":
            action["scheme"] = spec.scheme.upper()
        if spec.headers:
            action["httpHeaders"] = [{"name": name, "value": value} for name, value in spec.headers]
        probe["httpGet"] = action
    elif spec.kind == "grpc":
        if spec.service:
            action["service"] = spec.service
        probe["grpc"] = action
    else:
        probe["tcpSocket"] = action
    numbers: tuple[tuple[str, float, float], ...] = (
        ("timeoutSeconds", spec.timeout, _DEFAULT_TIMEOUT_SECONDS),
        ("periodSeconds", spec.period, 0.0),
        ("successThreshold", spec.success_threshold, _DEFAULT_SUCCESS_THRESHOLD),
        ("failureThreshold", spec.failure_threshold, _DEFAULT_FAILURE_THRESHOLD),
    )
    for name, value, default in numbers:
        if value != default:
            probe[name] = int(value) if float(value).is_integer() else value
    return json.dumps(probe, separators=(",", ":"))


def probe_token(secret: str, namespace: str, revision: str) -> str:
    """The token a revision's queue-proxy expects on probes: HMAC-SHA256 of `namespace/revision` under the
    installation's secret; "" without a secret (Knative's rule then applies: any probe-like request)."""
    if not secret:
        return ""
    digest = hmac.new(secret.encode(), f"{namespace}/{revision}".encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def token_matches(expected: str, sent: str | None) -> bool:
    """Whether a request may be answered as a probe: no token is expected, or it sent the expected one
    (compared in constant time)."""
    if not expected:
        return True
    return sent is not None and hmac.compare_digest(expected.encode(), sent.encode())
