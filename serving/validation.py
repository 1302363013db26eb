"""Field checks for Knative resource documents, shared by the Service parser and its local-platform checks.

`FieldReader` walks one YAML document and records every problem with its field path instead of stopping at
the first, so a user fixes a broken file in one round trip; the name and key rules are Kubernetes' own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final, TypeVar

T = TypeVar("T")

DNS_LABEL_MAX: Final = 63
"""Kubernetes limit for a DNS label (RFC 1123/1035)."""
_DNS1035_RE: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN_RE: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_QUALIFIED_NAME_RE: Final = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_ENV_NAME_RE: Final = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def dns1035_label_problem(value: str) -> str | None:
    """Why `value` is not a DNS-1035 label (Knative's rule for Service and Revision names and tags)."""
    if len(value) > DNS_LABEL_MAX:
        return f"{value!r} is longer than {DNS_LABEL_MAX} characters (DNS-1035 label)"
    if not _DNS1035_RE.match(value):
        return (
            f"{value!r} is not a DNS-1035 label: lower-case letters, digits and '-', "
            "starting with a letter and ending with a letter or digit"
        )
    return None


def dns1123_label_problem(value: str) -> str | None:
    """Why `value` is not a DNS-1123 label (Kubernetes' rule for namespaces and container names)."""
    if len(value) > DNS_LABEL_MAX:
        return f"{value!r} is longer than {DNS_LABEL_MAX} characters (DNS-1123 label)"
    if not _DNS1123_LABEL_RE.match(value):
        return (
            f"{value!r} is not a DNS-1123 label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return None


def qualified_name_problem(value: str) -> str | None:
    """Why `value` is not a Kubernetes qualified name (`[prefix/]name`, as label and annotation keys)."""
    prefix, slash, name = value.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN_RE.match(prefix)):
        return f"{value!r}: the prefix before '/' must be a DNS subdomain of at most 253 characters"
    if not name or len(name) > DNS_LABEL_MAX or not _QUALIFIED_NAME_RE.match(name):
        return (
            f"{value!r} is not a qualified name: at most {DNS_LABEL_MAX} letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit, optionally after a 'prefix/'"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a Kubernetes label value (empty, or a short qualified name without prefix)."""
    if value == "":
        return None
    if len(value) > DNS_LABEL_MAX or not _QUALIFIED_NAME_RE.match(value):
        return (
            f"{value!r} is not a label value: at most {DNS_LABEL_MAX} letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def env_name_problem(value: str) -> str | None:
    """Why `value` is not an environment variable name Kubernetes accepts."""
    if not _ENV_NAME_RE.match(value):
        return (
            f"{value!r} is not a valid environment variable name "
            "(letters, digits, '_', '-' and '.', not starting with a digit)"
        )
    return None


def type_name(value: object) -> str:
    """The YAML name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


class FieldReader:
    """Reads fields of one document, collecting every problem as `<prefix>: <path>: <rule>`.

    Readers never raise on bad input: they record the problem and return None so parsing can go on and
    report everything wrong in the document at once.
    """

    def __init__(self, prefix: str, problems: list[str]) -> None:
        self.prefix = prefix
        self.problems = problems

    def add(self, path: str, rule: str) -> None:
        self.problems.append(f"{self.prefix}: {path}: {rule}" if path else f"{self.prefix}: {rule}")

    def mapping(self, value: object, path: str) -> Mapping[Any, Any] | None:
        """`value` as a mapping; YAML null (an empty section) reads as an empty mapping."""
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return value
        self.add(path, f"must be a mapping, not a {type_name(value)}")
        return None

    def sequence(self, value: object, path: str) -> Sequence[Any] | None:
        if value is None:
            return []
        if isinstance(value, list):
            return value
        self.add(path, f"must be a list, not a {type_name(value)}")
        return None

    def fields(
        self,
        obj: Mapping[str, Any],
        path: str,
        allowed: Collection[str],
        disallowed: Mapping[str, str] | None = None,
    ) -> None:
        """Report every key of `obj` that is not in `allowed`.

        `disallowed` names fields the Kubernetes schema knows but Knative forbids, with the reason, so the
        message can tell a typo from a field that exists elsewhere.
        """
        for key in obj:
            if key in allowed:
                continue
            where = join(path, str(key))
            reason = (disallowed or {}).get(str(key))
            self.add(where, reason if reason else "unknown field")

    def string(self, obj: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> str | None:
        value = obj.get(key)
        where = join(path, key)
        if value is None:
            if required:
                self.add(where, "required")
            return None
        if not isinstance(value, str):
            self.add(where, f'must be a string, not a {type_name(value)} (quote it: "{value}")')
            return None
        return value

    def boolean(self, obj: Mapping[str, Any], key: str, path: str) -> bool | None:
        value = obj.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.add(join(path, key), f"must be true or false, not a {type_name(value)}")
            return None
        return value

    def integer(
        self, obj: Mapping[str, Any], key: str, path: str, low: int, high: int, *, why: str = ""
    ) -> int | None:
        """An integer field within [low, high]; `why` says where the bounds come from."""
        value = obj.get(key)
        where = join(path, key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(where, f"must be an integer, not a {type_name(value)}")
            return None
        if not low <= value <= high:
            suffix = f" ({why})" if why else ""
            self.add(where, f"{value} is out of range: must be {low}-{high}{suffix}")
            return None
        return value

    def strings(self, obj: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        """A list of strings (command, args); each non-string item is reported."""
        where = join(path, key)
        items = self.sequence(obj.get(key), where)
        if items is None:
            return ()
        out: list[str] = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                out.append(item)
            else:
                self.add(f"{where}[{i}]", f'must be a string, not a {type_name(item)} (quote it: "{item}")')
        return tuple(out)

    def string_map(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        value_check: Callable[[str], str | None] | None = None,
    ) -> dict[str, str]:
        """Labels or annotations: qualified-name keys and string values, as Kubernetes' ObjectMeta."""
        where = join(path, key)
        raw = self.mapping(obj.get(key), where)
        if raw is None:
            return {}
        out: dict[str, str] = {}
        for k, v in raw.items():
            entry = join(where, str(k))
            if not isinstance(k, str):
                self.add(entry, f"key must be a string, not a {type_name(k)}")
                continue
            problem = qualified_name_problem(k)
            if problem:
                self.add(entry, problem)
            if not isinstance(v, str):
                self.add(entry, f'value must be a string, not a {type_name(v)} (quote it: "{v}")')
                continue
            problem = value_check(v) if value_check else None
            if problem:
                self.add(entry, problem)
            out[k] = v
        return out

    def check(self, path: str, value: T | None, rule: Callable[[T], str | None]) -> None:
        """Apply a `*_problem` rule to a value that was read (None is skipped)."""
        if value is None:
            return
        problem = rule(value)
        if problem:
            self.add(path, problem)


def join(path: str, key: str) -> str:
    """Field path of `key` under `path`: `spec.template` + `spec` -> `spec.template.spec`."""
    if not path:
        return key
    # Keys with dots (annotation keys) are shown bracketed so the path stays unambiguous.
    if "." in key or "/" in key:
        return f"{path}[{key}]"
    return f"{path}.{key}"
