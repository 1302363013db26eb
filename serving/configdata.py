"""Kubernetes core `v1` ConfigMap and Secret documents, parsed and validated as the API server validates them.

They feed containers' `env` and `envFrom` (`serving.envsource`); no message or repr shows a Secret's values.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from serving.validation import (
    FieldReader,
    dns1123_label_problem,
    join,
    label_value_problem,
    type_name,
)

API_VERSION: Final = "v1"
CONFIG_MAP: Final = "ConfigMap"
SECRET: Final = "Secret"
KINDS: Final = (CONFIG_MAP, SECRET)
DEFAULT_NAMESPACE: Final = "default"
DEFAULT_SECRET_TYPE: Final = "Opaque"
"""The type of a Secret that names none, or names '' (Kubernetes' defaulting)."""
MAX_SIZE: Final = 1 << 20
"""Kubernetes' MaxConfigMapSize and MaxSecretSize: the values (not the keys) of one object, 1 MiB in all."""
DNS_SUBDOMAIN_MAX: Final = 253
"""Kubernetes limit for a DNS-1123 subdomain, the rule for ConfigMap and Secret names."""
KEY_MAX: Final = 253
"""Kubernetes' limit for a ConfigMap or Secret key (IsConfigMapKey: the DNS subdomain length)."""

# ObjectMeta fields the API server fills in; present in `kubectl get -o yaml` output and ignored here.
SERVER_META: Final = frozenset(
    {
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "ownerReferences",
        "finalizers",
        "selfLink",
    }
)
META_FIELDS: Final = frozenset({"name", "namespace", "labels", "annotations"}) | SERVER_META
"""ObjectMeta fields a document may carry: what a user writes, and what the API server adds."""
_FIELDS: Final = {
    CONFIG_MAP: frozenset({"apiVersion", "kind", "metadata", "data", "binaryData", "immutable"}),
    SECRET: frozenset({"apiVersion", "kind", "metadata", "data", "stringData", "type", "immutable"}),
}
_DNS1123_SUBDOMAIN_RE: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_KEY_RE: Final = re.compile(r"^[-._a-zA-Z0-9]+$")
_BASE64_NEWLINES: Final = str.maketrans("", "", "\r\n")
# Secret types whose keys Kubernetes' ValidateSecret requires; other types, Opaque included, need none.
_SERVICE_ACCOUNT_TOKEN: Final = "kubernetes.io/service-account-token"
_SERVICE_ACCOUNT_NAME: Final = "kubernetes.io/service-account.name"
_DOCKER_CONFIG_KEYS: Final = {
    "kubernetes.io/dockercfg": ".dockercfg",
    "kubernetes.io/dockerconfigjson": ".dockerconfigjson",
}
_REQUIRED_KEYS: Final = {
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
}
_BASIC_AUTH: Final = "kubernetes.io/basic-auth"


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ConfigData:
    """A ConfigMap or a Secret: its keys and their values as bytes."""

    kind: Literal["ConfigMap", "Secret"]
    namespace: str
    """`default` when the document names none (kubectl's default namespace)."""
    name: str
    data: Mapping[str, bytes]
    """A ConfigMap's `data` (UTF-8) and `binaryData` (decoded); a Secret's `data` (decoded) merged with its
    `stringData` (UTF-8), which wins for a key in both, as the API server merges them."""
    binary_keys: frozenset[str] = frozenset()
    """The keys of a ConfigMap's `binaryData`: the kubelet reads only `data` into environment variables."""
    secret_type: str | None = None
    """A Secret's `type` (`Opaque` when it names none); None for a ConfigMap."""
    immutable: bool = False
    source: Path
    """The YAML file the object came from."""
    document: int = 1
    """1-based index of the document in `source`, for messages."""

    @property
    def secret(self) -> bool:
        return self.kind == SECRET

    @property
    def key(self) -> tuple[str, str, str]:
        """(kind, namespace, name): what a container's reference finds the object by."""
        return (self.kind, self.namespace, self.name)

    @property
    def where(self) -> str:
        """Message prefix naming the file and the document."""
        return f"{self.source}: document {self.document} ({self.kind}/{self.name})"

    def __repr__(self) -> str:
        # Keys only: a Secret's values must not reach a log or a traceback.
        return (
            f"ConfigData(kind={self.kind!r}, namespace={self.namespace!r}, name={self.name!r}, "
            f"keys={sorted(self.data)!r}, immutable={self.immutable!r}, source={str(self.source)!r}, "
            f"document={self.document!r})"
        )


def dns1123_subdomain_problem(value: str) -> str | None:
    """Why `value` is not a DNS-1123 subdomain (Kubernetes' rule for ConfigMap and Secret names)."""
    if len(value) > DNS_SUBDOMAIN_MAX:
        return f"{value!r} is longer than {DNS_SUBDOMAIN_MAX} characters (DNS-1123 subdomain)"
    if not _DNS1123_SUBDOMAIN_RE.match(value):
        return (
            f"{value!r} is not a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    return None


def config_key_problem(key: str) -> str | None:
    """Why `key` is not a ConfigMap or Secret key (Kubernetes' IsConfigMapKey: it may name a file in a
    volume)."""
    if len(key) > KEY_MAX:
        return f"{key!r} is longer than {KEY_MAX} characters"
    if not _KEY_RE.match(key):
        return f"{key!r} is not a valid key: letters, digits, '-', '_' and '.' only"
    if key in (".", ".."):
        return f"{key!r} is not a valid key: it must not be '.' or '..'"
    if key.startswith(".."):
        return f"{key!r} is not a valid key: it must not start with '..'"
    return None


def parse_config_data(
    doc: Mapping[str, Any], source: Path, index: int, problems: list[str]
) -> ConfigData | None:
    """Read one ConfigMap or Secret document (its `kind` is one of `KINDS`); None when any problem was
    recorded (all of them are, each as `<file>: document <n> (<kind>/<name>): <field>: <rule>`)."""
    kind: Literal["ConfigMap", "Secret"] = "ConfigMap" if doc.get("kind") == CONFIG_MAP else "Secret"
    meta = doc.get("metadata")
    raw_name = meta.get("name") if isinstance(meta, Mapping) else None
    label = f"{kind}/{raw_name if isinstance(raw_name, str) else '?'}"
    r = FieldReader(f"{source}: document {index} ({label})", problems)
    before = len(problems)
    api_version = doc.get("apiVersion")
    if api_version != API_VERSION:
        r.add("apiVersion", f"must be {API_VERSION!r}, not {api_version!r}")
    r.fields(doc, "", _FIELDS[kind])
    name, namespace, annotations = _parse_metadata(r, meta, kind)
    immutable = r.boolean(doc, "immutable", "")
    secret_type = None
    binary_keys: frozenset[str] = frozenset()
    if kind == CONFIG_MAP:
        data, binary_keys = _config_map_data(r, doc)
    else:
        data = _secret_data(r, doc)
        secret_type = r.string(doc, "type", "") or DEFAULT_SECRET_TYPE
        _check_secret_type(r, secret_type, data, annotations)
    size = sum(len(value) for value in data.values())
    if size > MAX_SIZE:
        r.add("", f"{size} bytes of data: over Kubernetes' limit of {MAX_SIZE} bytes (1 MiB) for a {kind}")
    if len(problems) > before or name is None:
        return None
    return ConfigData(
        kind=kind,
        namespace=namespace,
        name=name,
        data=data,
        binary_keys=binary_keys,
        secret_type=secret_type,
        immutable=bool(immutable),
        source=source,
        document=index,
    )


def _parse_metadata(r: FieldReader, raw: object, kind: str) -> tuple[str | None, str, dict[str, str]]:
    """The object's name, namespace and annotations (labels are checked, not kept)."""
    meta = r.mapping(raw, "metadata") or {}
    r.fields(meta, "metadata", META_FIELDS, {"generateName": f"not supported: give the {kind} a `name`"})
    name = r.string(meta, "name", "metadata", required=True)
    if name == "":
        r.add("metadata.name", "required")
    else:
        r.check("metadata.name", name, dns1123_subdomain_problem)
    namespace = r.string(meta, "namespace", "metadata") or DEFAULT_NAMESPACE
    r.check("metadata.namespace", namespace, dns1123_label_problem)
    annotations = r.string_map(meta, "annotations", "metadata")
    r.string_map(meta, "labels", "metadata", label_value_problem)
    return name, namespace, annotations


def _keyed(r: FieldReader, doc: Mapping[str, Any], field: str) -> Mapping[str, object]:
    """A `data`-like field: every key a valid ConfigMap key; values are left to the caller."""
    raw = r.mapping(doc.get(field), field)
    if raw is None:
        return {}
    out: dict[str, object] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            r.add(join(field, str(key)), f"key must be a string, not a {type_name(key)}")
            continue
        r.check(join(field, key), key, config_key_problem)
        out[key] = value
    return out


def _config_map_data(r: FieldReader, doc: Mapping[str, Any]) -> tuple[dict[str, bytes], frozenset[str]]:
    """`data` (strings) and `binaryData` (base64) of a ConfigMap; a key may not be in both (Kubernetes'
    ValidateConfigMap)."""
    data: dict[str, bytes] = {}
    for key, value in _keyed(r, doc, "data").items():
        where = join("data", key)
        if value is None:
            r.add(where, 'must be a string, not null (write "" for an empty value)')
        elif not isinstance(value, str):
            r.add(where, f'must be a string, not a {type_name(value)} (quote it: "{value}")')
        else:
            data[key] = value.encode()
    binary: dict[str, bytes] = {}
    for key, value in _keyed(r, doc, "binaryData").items():
        decoded = _base64(r, join("binaryData", key), value)
        if decoded is not None:
            binary[key] = decoded
    for key in binary.keys() & data.keys():
        r.add(join("data", key), "duplicate of a key in binaryData: a key may be in only one of them")
    return {**data, **binary}, frozenset(binary)


def _secret_data(r: FieldReader, doc: Mapping[str, Any]) -> dict[str, bytes]:
    """`data` (base64) merged with `stringData` (plain strings, winning for a key in both), as the API server
    merges them before it validates and stores the Secret."""
    data: dict[str, bytes] = {}
    for key, value in _keyed(r, doc, "data").items():
        decoded = _base64(r, join("data", key), value)
        if decoded is not None:
            data[key] = decoded
    for key, value in _keyed(r, doc, "stringData").items():
        where = join("stringData", key)
        if value is None:
            r.add(where, 'must be a string, not null (write "" for an empty value)')
        elif not isinstance(value, str):
            # No "quote it" hint here: the hint would repeat the value.
            r.add(where, f"must be a string, not a {type_name(value)}: quote it")
        else:
            data[key] = value.encode()
    return data


def _base64(r: FieldReader, where: str, value: object) -> bytes | None:
    """A base64 value as Kubernetes decodes `[]byte` fields (standard alphabet, padded; line breaks are
    ignored). The message never repeats the value: it may be a Secret's."""
    if not isinstance(value, str):
        r.add(where, f"must be a base64 string, not a {type_name(value)}")
        return None
    try:
        return base64.b64decode(value.translate(_BASE64_NEWLINES), validate=True)
    except (binascii.Error, ValueError):
        r.add(where, "not valid base64 (standard alphabet, padded with '='); write plain text in stringData")
        return None


def _check_secret_type(
    r: FieldReader, secret_type: str, data: Mapping[str, bytes], annotations: Mapping[str, str]
) -> None:
    """The keys Kubernetes' ValidateSecret requires of the built-in Secret types."""
    if secret_type == _SERVICE_ACCOUNT_TOKEN and not annotations.get(_SERVICE_ACCOUNT_NAME):
        r.add(join("metadata.annotations", _SERVICE_ACCOUNT_NAME), f"required for type {secret_type}")
    docker_key = _DOCKER_CONFIG_KEYS.get(secret_type)
    if docker_key is not None:
        if docker_key not in data:
            r.add(join("data", docker_key), f"required for type {secret_type}")
        elif not _is_json_object(data[docker_key]):
            r.add(join("data", docker_key), f"must be a JSON object for type {secret_type}")
    for key in _REQUIRED_KEYS.get(secret_type, ()):
        # An ssh-privatekey must also be non-empty (Kubernetes checks its length, the TLS keys' presence).
        if key not in data or (key == "ssh-privatekey" and not data[key]):
            r.add(join("data", key), f"required for type {secret_type}")
    if secret_type == _BASIC_AUTH and "username" not in data and "password" not in data:
        r.add("data", f"username or password required for type {secret_type}")


def _is_json_object(value: bytes) -> bool:
    try:
        return isinstance(json.loads(value), dict)
    except ValueError:
        return False
