"""The user container of a revision: parsed from `spec.template.spec.containers[0]` with Knative's rules.

Knative accepts a subset of the Kubernetes container (its field masks); fields outside that subset are
rejected here by name, so a file that passes runs on a cluster too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from serving.configdata import config_key_problem, dns1123_subdomain_problem
from serving.quantity import QuantityError, parse_quantity
from serving.validation import FieldReader, dns1123_label_problem, env_name_problem, join

DEFAULT_PORT: Final = 8080
"""Knative's default user port when `ports` is empty."""
RESERVED_PORTS: Final = frozenset({8012, 8013, 8022, 9090, 9091, 8008})
"""Queue-proxy HTTP/1, HTTP/2, admin, autoscaler and user metrics ports, and the profiling port (Knative)."""
RESERVED_ENV: Final = frozenset({"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"})
"""Set by the platform for every user container (Knative's runtime contract)."""
HTTP1: Final = "http1"
H2C: Final = "h2c"
PORT_NAMES: Final = frozenset({"", HTTP1, H2C})
INT32_MAX: Final = 2**31 - 1
PROBE_HANDLERS: Final = ("httpGet", "tcpSocket", "exec", "grpc")

_CONTAINER_FIELDS: Final = frozenset(
    {
        "name",
        "image",
        "command",
        "args",
        "env",
        "envFrom",
        "workingDir",
        "ports",
        "readinessProbe",
        "livenessProbe",
        "startupProbe",
        "resources",
        "imagePullPolicy",
        "securityContext",
        "terminationMessagePath",
        "terminationMessagePolicy",
        "volumeMounts",
    }
)
_NOT_ALLOWED: Final = "not allowed: Knative does not accept this container field"
_CONTAINER_DISALLOWED: Final = {
    k: _NOT_ALLOWED for k in ("lifecycle", "stdin", "stdinOnce", "tty", "volumeDevices")
}
_PROBE_FIELDS: Final = frozenset(
    {
        *PROBE_HANDLERS,
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
        "terminationGracePeriodSeconds",
    }
)
_HANDLER_FIELDS: Final = {
    "httpGet": frozenset({"host", "path", "scheme", "httpHeaders", "port"}),
    "tcpSocket": frozenset({"host", "port"}),
    "exec": frozenset({"command"}),
    "grpc": frozenset({"port", "service"}),
}
_SECURITY_FIELDS: Final = frozenset(
    {
        "capabilities",
        "readOnlyRootFilesystem",
        "runAsUser",
        "runAsGroup",
        "runAsNonRoot",
        "allowPrivilegeEscalation",
        "seccompProfile",
    }
)
_SECURITY_DISALLOWED: Final = {
    "privileged": "not allowed: Knative disallows privileged containers",
    "seLinuxOptions": _NOT_ALLOWED,
    "procMount": _NOT_ALLOWED,
    "windowsOptions": _NOT_ALLOWED,
}
_ENV_SOURCE_FIELDS: Final = frozenset({"configMapKeyRef", "secretKeyRef"})
_ENV_FROM_SOURCES: Final = ("configMapRef", "secretRef")
# An image reference as Knative parses it (go-containerregistry, weak validation): [registry/]repository
# [:tag][@sha256:digest]; the repository is lower-case.
_IMAGE_RE: Final = re.compile(
    r"^(?:(?:[a-zA-Z0-9][a-zA-Z0-9.-]*(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?)/)?"
    r"[a-z0-9][a-z0-9_.-]*(?:/[a-z0-9][a-z0-9_.-]*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@sha256:[0-9a-f]{64})?$"
)
_FIELD_REF_OFF: Final = (
    "not allowed: needs Knative's feature flag kubernetes.podspec-fieldref (off by default)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Container:
    """What the platform needs to run the user container."""

    image: str | None
    """Required on Kubernetes; the local platform runs `command` instead of pulling the image."""
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    """Literal `value` entries in order (may use `$(NAME)` of earlier ones); `valueFrom` ones are omitted."""
    port: int
    """`ports[0].containerPort`, 8080 when absent (Knative default)."""
    readiness_probe: Mapping[str, Any] | None
    """The Kubernetes Probe as written (JSON-able), for the queue-proxy's `SERVING_READINESS_PROBE`."""
    working_dir: str | None
    port_name: str = ""
    """`ports[0].name`: '', 'http1' or 'h2c' (HTTP/2 cleartext all the way to the app, as for gRPC)."""
    name: str | None = None
    """`name` as written (Knative names a single unnamed container `user-container`)."""
    index: int = 0
    """Its place in `spec.template.spec.containers` (the serving container need not be the first)."""

    @property
    def protocol(self) -> str:
        """'h2c' when the app speaks HTTP/2 cleartext, else 'http1' (Knative's port-name rule)."""
        return H2C if self.port_name == H2C else HTTP1


def image_problem(image: str) -> str | None:
    """Why `image` is not an image reference Knative can resolve."""
    if not _IMAGE_RE.match(image):
        return (
            f"{image!r} is not an image reference: [registry/]repository[:tag][@sha256:digest] "
            "with a lower-case repository"
        )
    return None


def parse_container(
    r: FieldReader, raw: object, path: str, *, index: int = 0, sidecar: bool = False
) -> Container | None:
    """Read and check one container (the serving one, or with `sidecar` one beside it: Knative refuses ports
    and probes there, the latter behind its multi-container-probing flag); None when any problem was
    recorded."""
    before = len(r.problems)
    obj = r.mapping(raw, path)
    if obj is None:
        return None
    r.fields(obj, path, _CONTAINER_FIELDS, _CONTAINER_DISALLOWED)
    name = r.string(obj, "name", path)
    r.check(join(path, "name"), name, dns1123_label_problem)
    if name == "queue-proxy":
        r.add(join(path, "name"), "'queue-proxy' is a reserved container name")
    image = r.string(obj, "image", path)
    r.check(join(path, "image"), image, image_problem)
    command = r.strings(obj, "command", path)
    args = r.strings(obj, "args", path)
    working_dir = r.string(obj, "workingDir", path)
    env = _parse_env(r, obj.get("env"), join(path, "env"))
    _parse_env_from(r, obj.get("envFrom"), join(path, "envFrom"))
    port, port_name = _parse_ports(r, obj.get("ports"), join(path, "ports"))
    if sidecar:
        if obj.get("ports"):
            r.add(
                join(path, "ports"),
                "not allowed: only the serving container (the one with ports) may have ports",
            )
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in obj:
                r.add(
                    join(path, probe),
                    "not allowed on a sidecar: needs Knative's feature flag multi-container-probing "
                    "(off by default)",
                )
    readiness = _parse_probe(
        r, obj.get("readinessProbe"), join(path, "readinessProbe"), port_name, readiness=True
    )
    for probe in ("livenessProbe", "startupProbe"):
        _parse_probe(r, obj.get(probe), join(path, probe), port_name, readiness=False)
    _check_misc(r, obj, path)
    if len(r.problems) > before:
        return None
    return Container(
        image=image,
        command=command,
        args=args,
        env=env,
        port=port,
        readiness_probe=readiness,
        working_dir=working_dir,
        port_name=port_name,
        name=name,
        index=index,
    )


def _parse_env(r: FieldReader, raw: object, path: str) -> tuple[tuple[str, str], ...]:
    items = r.sequence(raw, path)
    out: list[tuple[str, str]] = []
    for i, item in enumerate(items or ()):
        where = f"{path}[{i}]"
        entry = r.mapping(item, where)
        if entry is None:
            continue
        r.fields(entry, where, {"name", "value", "valueFrom"})
        name = r.string(entry, "name", where, required=True)
        r.check(join(where, "name"), name, env_name_problem)
        if name in RESERVED_ENV:
            r.add(join(where, "name"), f"{name!r} is a reserved environment variable: the platform sets it")
        value = r.string(entry, "value", where)
        source = entry.get("valueFrom")
        if source is not None:
            if value is not None:
                r.add(where, "may not have both value and valueFrom")
            src = r.mapping(source, join(where, "valueFrom"))
            if src is not None:
                disallowed = {"fieldRef": _FIELD_REF_OFF, "resourceFieldRef": _FIELD_REF_OFF}
                r.fields(src, join(where, "valueFrom"), _ENV_SOURCE_FIELDS, disallowed)
                if len(src) != 1:
                    r.add(join(where, "valueFrom"), "expected exactly one of configMapKeyRef, secretKeyRef")
                for ref in sorted(_ENV_SOURCE_FIELDS & src.keys()):
                    _check_object_ref(r, src[ref], f"{where}.valueFrom.{ref}", with_key=True)
        elif name is not None:
            out.append((name, value or ""))
    return tuple(out)


def _parse_env_from(r: FieldReader, raw: object, path: str) -> None:
    for i, item in enumerate(r.sequence(raw, path) or ()):
        where = f"{path}[{i}]"
        entry = r.mapping(item, where)
        if entry is None:
            continue
        r.fields(entry, where, {"prefix", *_ENV_FROM_SOURCES})
        prefix = r.string(entry, "prefix", where)
        if prefix:
            # Kubernetes' validateEnvFrom: a prefix is itself a valid variable name.
            r.check(join(where, "prefix"), prefix, env_name_problem)
        refs = [k for k in _ENV_FROM_SOURCES if k in entry]
        if len(refs) != 1:
            r.add(where, "expected exactly one of configMapRef, secretRef")
        for ref in refs:
            _check_object_ref(r, entry[ref], f"{where}.{ref}", with_key=False)


def _check_object_ref(r: FieldReader, raw: object, path: str, *, with_key: bool) -> None:
    """A reference to a ConfigMap or Secret (`configMapKeyRef`, `secretRef`, ...), as Kubernetes validates it:
    a `name` (DNS-1123 subdomain), a `key` (a valid ConfigMap key) when it picks one, and `optional`."""
    ref = r.mapping(raw, path)
    if ref is None:
        return
    r.fields(ref, path, {"name", "key", "optional"} if with_key else {"name", "optional"})
    fields = (("name", dns1123_subdomain_problem), ("key", config_key_problem))
    for field, rule in fields if with_key else fields[:1]:
        value = r.string(ref, field, path, required=True)
        if value == "":
            r.add(join(path, field), "required")
        else:
            r.check(join(path, field), value, rule)
    r.boolean(ref, "optional", path)


def _parse_ports(r: FieldReader, raw: object, path: str) -> tuple[int, str]:
    """The user port and its name; Knative allows a single port, named '', 'http1' or 'h2c'."""
    items = r.sequence(raw, path)
    if not items:
        return DEFAULT_PORT, ""
    if len(items) > 1:
        r.add(path, f"{len(items)} ports are set: Knative allows a single container port")
    where = f"{path}[0]"
    entry = r.mapping(items[0], where)
    if entry is None:
        return DEFAULT_PORT, ""
    r.fields(
        entry,
        where,
        {"containerPort", "name", "protocol"},
        {"hostIP": _NOT_ALLOWED, "hostPort": _NOT_ALLOWED},
    )
    port = r.integer(entry, "containerPort", where, 1, 65535)
    if "containerPort" not in entry:
        r.add(join(where, "containerPort"), "required")
    if port in RESERVED_PORTS:
        r.add(join(where, "containerPort"), f"{port} is reserved for the queue-proxy; use another port")
    name = r.string(entry, "name", where) or ""
    if name not in PORT_NAMES:
        r.add(join(where, "name"), f"port name {name!r} is not allowed: use no name, 'http1' or 'h2c'")
    protocol = r.string(entry, "protocol", where)
    if protocol not in (None, "TCP"):
        r.add(join(where, "protocol"), f"{protocol!r} is not allowed: only TCP")
    return port or DEFAULT_PORT, name


def _parse_probe(
    r: FieldReader, raw: object, path: str, port_name: str, *, readiness: bool
) -> Mapping[str, Any] | None:
    """Check a probe as Knative does; readiness probes may omit the handler (Knative adds a TCP one)."""
    if raw is None:
        return None
    probe = r.mapping(raw, path)
    if probe is None:
        return None
    r.fields(probe, path, _PROBE_FIELDS)
    handlers = [h for h in PROBE_HANDLERS if h in probe]
    if len(handlers) > 1:
        r.add(path, f"expected exactly one of {', '.join(PROBE_HANDLERS)}; got {', '.join(handlers)}")
    elif not handlers and not readiness:
        r.add(path, f"expected exactly one of {', '.join(PROBE_HANDLERS)}")
    for handler in handlers:
        _check_handler(r, probe[handler], join(path, handler), handler, port_name)
    for key in (
        "initialDelaySeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
        "timeoutSeconds",
    ):
        r.integer(probe, key, path, 0, INT32_MAX, why="0 or more")
    if readiness and probe.get("periodSeconds", 0) == 0:
        # Knative's aggressive probing (periodSeconds 0) retries on its own schedule.
        for key in ("failureThreshold", "timeoutSeconds"):
            if probe.get(key, 0) not in (0, None):
                r.add(join(path, key), "not allowed when periodSeconds is 0 (Knative's aggressive probing)")
    return dict(probe)


def _check_handler(r: FieldReader, raw: object, path: str, handler: str, port_name: str) -> None:
    action = r.mapping(raw, path)
    if action is None:
        return
    r.fields(action, path, _HANDLER_FIELDS[handler])
    port = action.get("port")
    if handler in ("httpGet", "tcpSocket") and isinstance(port, str) and port != (port_name or "http"):
        r.add(join(path, "port"), f"probe port {port!r} must match the container port's name")
    elif port is not None and not isinstance(port, str | int):
        r.add(join(path, "port"), "must be a port number or the container port's name")
    if handler == "httpGet":
        for i, header in enumerate(r.sequence(action.get("httpHeaders"), join(path, "httpHeaders")) or ()):
            entry = r.mapping(header, f"{path}.httpHeaders[{i}]")
            if entry is not None:
                r.fields(entry, f"{path}.httpHeaders[{i}]", {"name", "value"})
                r.string(entry, "name", f"{path}.httpHeaders[{i}]", required=True)
                r.string(entry, "value", f"{path}.httpHeaders[{i}]")
        scheme = r.string(action, "scheme", path)
        if scheme not in (None, "HTTP", "HTTPS"):
            r.add(join(path, "scheme"), f"{scheme!r} is not HTTP or HTTPS")
    if handler == "exec":
        r.strings(action, "command", path)


def _resource_amounts(r: FieldReader, raw: object, path: str) -> dict[str, Decimal]:
    """The quantities of `resources.limits` or `.requests`, each checked as the API server parses it."""
    amounts: dict[str, Decimal] = {}
    for name, value in (r.mapping(raw, path) or {}).items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            r.add(join(path, str(name)), "must be a quantity such as 500m, 2 or 128Mi")
            continue
        try:
            amount = parse_quantity(value)
        except QuantityError as exc:
            r.add(join(path, str(name)), str(exc))
            continue
        if amount < 0:
            r.add(join(path, str(name)), f"{value!r} must be greater than or equal to 0")
            continue
        amounts[str(name)] = amount
    return amounts


def _check_misc(r: FieldReader, obj: Mapping[str, Any], path: str) -> None:
    """Fields Knative accepts that do not change how a revision serves requests."""
    policy = r.string(obj, "imagePullPolicy", path)
    if policy not in (None, "Always", "IfNotPresent", "Never"):
        r.add(join(path, "imagePullPolicy"), f"{policy!r} is not Always, IfNotPresent or Never")
    message_policy = r.string(obj, "terminationMessagePolicy", path)
    if message_policy not in (None, "File", "FallbackToLogsOnError"):
        r.add(
            join(path, "terminationMessagePolicy"), f"{message_policy!r} is not File or FallbackToLogsOnError"
        )
    r.string(obj, "terminationMessagePath", path)
    resources = r.mapping(obj.get("resources"), join(path, "resources"))
    if resources is not None:
        r.fields(resources, join(path, "resources"), {"limits", "requests"}, {"claims": _NOT_ALLOWED})
        amounts = {
            key: _resource_amounts(r, resources.get(key), join(join(path, "resources"), key))
            for key in ("limits", "requests")
        }
        for name, request in amounts["requests"].items():
            limit = amounts["limits"].get(name)
            if limit is not None and request > limit:
                r.add(
                    join(join(join(path, "resources"), "requests"), name),
                    f"must be less than or equal to the {name} limit",
                )
    security = r.mapping(obj.get("securityContext"), join(path, "securityContext"))
    if security is not None:
        where = join(path, "securityContext")
        r.fields(security, where, _SECURITY_FIELDS, _SECURITY_DISALLOWED)
        for key in ("runAsUser", "runAsGroup"):
            r.integer(security, key, where, 0, INT32_MAX)
        for key in ("runAsNonRoot", "readOnlyRootFilesystem", "allowPrivilegeEscalation"):
            r.boolean(security, key, where)
        caps = r.mapping(security.get("capabilities"), join(where, "capabilities"))
        if caps is not None:
            add_off = "not allowed: needs Knative's feature flag kubernetes.containerspec-addcapabilities"
            r.fields(caps, join(where, "capabilities"), {"drop"}, {"add": add_off})
