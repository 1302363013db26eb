"""A container's environment from its `env` and `envFrom`, reading ConfigMaps and Secrets as the kubelet does.

A missing object or key is an `EnvSourceError` worded like the kubelet's CreateContainerConfigError; no
message or repr here shows a value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from serving.configdata import CONFIG_MAP, SECRET, ConfigData
from serving.validation import env_name_problem

Lookup = Callable[[str, str, str], ConfigData | None]
"""(kind, namespace, name) -> the ConfigMap or Secret, or None when there is none."""
_KEY_REFS: Final = (("configMapKeyRef", CONFIG_MAP), ("secretKeyRef", SECRET))
_ENV_FROM_REFS: Final = (("configMapRef", CONFIG_MAP), ("secretRef", SECRET))


class EnvSourceError(Exception):
    """A ConfigMap, Secret or key a container needs is missing: the kubelet does not start the container
    (CreateContainerConfigError). The message names the object and the key, never a value."""


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ResolvedEnv:
    """The container's variables before `$(VAR)` expansion, in the kubelet's order."""

    env: list[tuple[str, str]]
    """(name, value) assignments: the keys of each `envFrom` source in order (a source's keys sorted, as the
    API server returns them), then each `env` entry in order. A name may come again: the later assignment
    wins, as in the kubelet's map."""
    literal: frozenset[int]
    """Indexes in `env` of `env[].value` literals: the kubelet expands `$(VAR)` in those only, against the
    variables assigned before them; values read from ConfigMaps and Secrets are used as they are."""
    skipped: list[str]
    """`envFrom` keys (with their prefix) that are not valid variable names: the kubelet skips them and
    records an InvalidEnvironmentVariableNames event."""

    def variables(self, expand: Callable[[str, Mapping[str, str]], str]) -> dict[str, str]:
        """The environment as the kubelet builds it, `expand(text, variables_so_far)` applied to literals."""
        out: dict[str, str] = {}
        for index, (name, value) in enumerate(self.env):
            out[name] = expand(value, out) if index in self.literal else value
        return out

    def __repr__(self) -> str:
        # Names only: values may come from Secrets.
        return f"ResolvedEnv(names={[name for name, _ in self.env]!r}, skipped={self.skipped!r})"


def resolve_env(raw_container: Mapping[str, Any], namespace: str, lookup: Lookup) -> ResolvedEnv:
    """The container's variables (a container validated by `serving.container`), reading the objects it
    refers to in `namespace` through `lookup`, by the kubelet's rules (makeEnvironmentVariables):

    - `envFrom` first, each source in order: every key of the object's `data` (not a ConfigMap's
      `binaryData`), after `prefix`; keys that are not variable names are skipped; a missing object is an
      error unless the source is `optional`;
    - then `env` in order: a literal `value`, or the key of a `configMapKeyRef`/`secretKeyRef`; a missing
      object or key is an error unless the reference is `optional`, and then the variable is left out.

    Raises `EnvSourceError` for a missing object or key that is not optional.
    """
    env: list[tuple[str, str]] = []
    literal: set[int] = set()
    skipped: list[str] = []
    for entry in _mappings(raw_container.get("envFrom")):
        for field, kind in _ENV_FROM_REFS:
            name, _, optional = _ref(entry.get(field))
            if name is None:
                continue
            data = _find(lookup, kind, namespace, name, optional)
            if data is None:
                continue
            prefix = entry.get("prefix")
            prefix = prefix if isinstance(prefix, str) else ""
            invalid: list[str] = []
            for data_key in sorted(data.data.keys() - data.binary_keys):
                prefixed = prefix + data_key
                if env_name_problem(prefixed):
                    invalid.append(prefixed)
                else:
                    env.append((prefixed, _text(data, data_key)))
            skipped += sorted(invalid)
    for entry in _mappings(raw_container.get("env")):
        variable = entry.get("name")
        if not isinstance(variable, str):
            continue
        source = entry.get("valueFrom")
        if source is None:
            value = entry.get("value")
            literal.add(len(env))
            env.append((variable, value if isinstance(value, str) else ""))
            continue
        for field, kind in _KEY_REFS:
            name, key, optional = _ref(source.get(field) if isinstance(source, Mapping) else None)
            if name is None or key is None:
                continue
            data = _find(lookup, kind, namespace, name, optional)
            if data is None:
                continue
            if key not in data.data or key in data.binary_keys:
                if optional:
                    continue
                raise EnvSourceError(f"couldn't find key {key} in {kind} {namespace}/{name}")
            env.append((variable, _text(data, key)))
    return ResolvedEnv(env=env, literal=frozenset(literal), skipped=skipped)


def _mappings(raw: object) -> list[Mapping[str, Any]]:
    return [item for item in raw if isinstance(item, Mapping)] if isinstance(raw, list) else []


def _ref(raw: object) -> tuple[str | None, str | None, bool]:
    """(name, key, optional) of a reference; None for what it does not name."""
    if not isinstance(raw, Mapping):
        return None, None, False
    name, key = raw.get("name"), raw.get("key")
    return (
        name if isinstance(name, str) and name else None,
        key if isinstance(key, str) and key else None,
        raw.get("optional") is True,
    )


def _find(lookup: Lookup, kind: str, namespace: str, name: str, optional: bool) -> ConfigData | None:
    """The object, or None when it is missing and `optional`; the kubelet's not-found error otherwise."""
    data = lookup(kind, namespace, name)
    if data is None and not optional:
        raise EnvSourceError(f'{kind.lower()} "{name}" not found')
    return data


def _text(data: ConfigData, key: str) -> str:
    """A value as the text of a variable (bytes that are not UTF-8 become U+FFFD). A NUL byte cannot be in an
    environment variable: that is an error naming the key, as a container runtime refuses it."""
    value = data.data[key]
    if b"\0" in value:
        raise EnvSourceError(
            f"couldn't use key {key} in {data.kind} {data.namespace}/{data.name}: its value holds a NUL "
            "byte, which no environment variable can"
        )
    return value.decode("utf-8", errors="replace")
