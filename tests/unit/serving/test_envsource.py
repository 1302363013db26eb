"""A container's environment from ConfigMaps and Secrets, by the kubelet's rules; and the checks of the
references in `env` and `envFrom`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from serving.configdata import ConfigData
from serving.envsource import EnvSourceError, ResolvedEnv, resolve_env
from serving.service import ServiceFileError, parse_documents
from tests.unit.serving.servicedoc import base_service, dump, with_field

C = "spec.template.spec.containers[0]"
SECRET_VALUE = "hunter2-do-not-print"


def config_map(name: str, data: Mapping[str, str], binary: Mapping[str, bytes] | None = None) -> ConfigData:
    return ConfigData(
        kind="ConfigMap",
        namespace="default",
        name=name,
        data={**{k: v.encode() for k, v in data.items()}, **(binary or {})},
        binary_keys=frozenset(binary or {}),
        source=Path("c.yaml"),
    )


def secret(name: str, data: Mapping[str, bytes], namespace: str = "default") -> ConfigData:
    return ConfigData(
        kind="Secret",
        namespace=namespace,
        name=name,
        data=dict(data),
        secret_type="Opaque",
        source=Path("c.yaml"),
    )


OBJECTS = [
    config_map(
        "app-config", {"greeting": "hello", "LEVEL": "info", "1st": "x", "a b.c": "y", "ref": "$(LEVEL)"}
    ),
    config_map("other", {"LEVEL": "debug", "EXTRA": "1"}, binary={"logo": b"\x89PNG"}),
    secret("db", {"password": SECRET_VALUE.encode(), "user": b"admin", "raw": b"\xff\xfe"}),
    secret("db", {"password": b"elsewhere"}, namespace="team-a"),
    secret("nul", {"bad": b"a\0b"}),
]


def lookup(kind: str, namespace: str, name: str) -> ConfigData | None:
    return next((o for o in OBJECTS if (o.kind, o.namespace, o.name) == (kind, namespace, name)), None)


def expand(text: str, env: Mapping[str, str]) -> str:
    """`$(NAME)` from `env`, left as written when undefined (enough of the kubelet's rule for these tests)."""
    return re.sub(r"\$\(([^)]*)\)", lambda m: env.get(m[1], m[0]), text)


def cm_ref(name: str, **more: object) -> dict[str, object]:
    return {"configMapRef": {"name": name, **more}}


def secret_ref(name: str, **more: object) -> dict[str, object]:
    return {"secretRef": {"name": name, **more}}


def value_from(var: str, ref: str, name: str, key: str, **more: object) -> dict[str, object]:
    return {"name": var, "valueFrom": {ref: {"name": name, "key": key, **more}}}


RESOLVED = [
    pytest.param({}, [], [], id="nothing"),
    pytest.param(
        {"env": [{"name": "A", "value": "1"}, {"name": "E"}]}, [("A", "1"), ("E", "")], [], id="literal"
    ),
    pytest.param(
        {"envFrom": [cm_ref("other")]},
        [("EXTRA", "1"), ("LEVEL", "debug")],
        [],
        id="env-from-sorted-keys-without-binary-data",
    ),
    pytest.param(
        {"envFrom": [cm_ref("app-config")]},
        [("LEVEL", "info"), ("greeting", "hello"), ("ref", "$(LEVEL)")],
        ["1st", "a b.c"],
        id="env-from-skips-invalid-names",
    ),
    pytest.param(
        {"envFrom": [{"prefix": "APP_", **cm_ref("app-config")}]},
        [("APP_1st", "x"), ("APP_LEVEL", "info"), ("APP_greeting", "hello"), ("APP_ref", "$(LEVEL)")],
        ["APP_a b.c"],
        id="env-from-prefix",
    ),
    pytest.param(
        {"envFrom": [cm_ref("app-config"), cm_ref("other")]},
        [
            ("LEVEL", "info"),
            ("greeting", "hello"),
            ("ref", "$(LEVEL)"),
            ("EXTRA", "1"),
            ("LEVEL", "debug"),
        ],
        ["1st", "a b.c"],
        id="later-source-overrides",
    ),
    pytest.param(
        {"envFrom": [cm_ref("missing", optional=True), secret_ref("gone", optional=True), secret_ref("db")]},
        [("password", SECRET_VALUE), ("raw", "\ufffd\ufffd"), ("user", "admin")],
        [],
        id="optional-sources-missing",
    ),
    pytest.param(
        {
            "env": [
                value_from("PW", "secretKeyRef", "db", "password"),
                value_from("GREETING", "configMapKeyRef", "app-config", "greeting"),
            ]
        },
        [("PW", SECRET_VALUE), ("GREETING", "hello")],
        [],
        id="key-refs",
    ),
    pytest.param(
        {
            "env": [
                value_from("A", "secretKeyRef", "db", "nope", optional=True),
                value_from("B", "configMapKeyRef", "missing", "k", optional=True),
                value_from("C", "configMapKeyRef", "other", "logo", optional=True),
                {"name": "D", "value": "d"},
            ]
        },
        [("D", "d")],
        [],
        id="optional-keys-left-out",
    ),
    pytest.param(
        {
            "envFrom": [cm_ref("app-config")],
            "env": [{"name": "LEVEL", "value": "warn"}, value_from("greeting", "secretKeyRef", "db", "user")],
        },
        [
            ("LEVEL", "info"),
            ("greeting", "hello"),
            ("ref", "$(LEVEL)"),
            ("LEVEL", "warn"),
            ("greeting", "admin"),
        ],
        ["1st", "a b.c"],
        id="env-overrides-env-from",
    ),
]


@pytest.mark.parametrize(("container", "env", "skipped"), RESOLVED)
def test_resolved_in_the_kubelets_order(
    container: dict[str, Any], env: list[tuple[str, str]], skipped: list[str]
) -> None:
    resolved = resolve_env(container, "default", lookup)

    assert resolved.env == env
    assert resolved.skipped == skipped
    assert resolved.variables(expand) == dict(env)


def test_the_namespace_picks_the_object() -> None:
    container = {"env": [value_from("PW", "secretKeyRef", "db", "password")]}

    assert resolve_env(container, "team-a", lookup).env == [("PW", "elsewhere")]


def test_only_literals_are_expanded_against_what_came_before() -> None:
    container = {
        "envFrom": [cm_ref("app-config")],
        "env": [
            {"name": "EARLY", "value": "$(LEVEL)-$(LATE)"},
            {"name": "LEVEL", "value": "warn"},
            {"name": "LATE", "value": "$(LEVEL)"},
            value_from("FROM_KEY", "configMapKeyRef", "app-config", "ref"),
        ],
    }

    resolved = resolve_env(container, "default", lookup)

    assert resolved.literal == frozenset({3, 4, 5})
    assert resolved.variables(expand) == {
        "LEVEL": "warn",
        "greeting": "hello",
        "ref": "$(LEVEL)",  # a ConfigMap's value is used as it is
        "EARLY": "info-$(LATE)",  # LEVEL as it was then; LATE not defined yet
        "LATE": "warn",
        "FROM_KEY": "$(LEVEL)",
    }


ERRORS = [
    pytest.param(
        {"envFrom": [cm_ref("app-settings")]}, 'configmap "app-settings" not found', id="env-from-cm"
    ),
    pytest.param({"envFrom": [secret_ref("nope")]}, 'secret "nope" not found', id="env-from-secret"),
    pytest.param(
        {"env": [value_from("A", "configMapKeyRef", "app-settings", "greeting")]},
        'configmap "app-settings" not found',
        id="key-ref-cm",
    ),
    pytest.param(
        {"env": [value_from("A", "secretKeyRef", "nope", "password", optional=False)]},
        'secret "nope" not found',
        id="key-ref-secret",
    ),
    pytest.param(
        {"env": [value_from("A", "configMapKeyRef", "app-config", "greting")]},
        "couldn't find key greting in ConfigMap default/app-config",
        id="missing-cm-key",
    ),
    pytest.param(
        {"env": [value_from("A", "secretKeyRef", "db", "passwd")]},
        "couldn't find key passwd in Secret default/db",
        id="missing-secret-key",
    ),
    pytest.param(
        {"env": [value_from("A", "configMapKeyRef", "other", "logo")]},
        "couldn't find key logo in ConfigMap default/other",
        id="binary-data-key-is-not-read",
    ),
    pytest.param(
        {
            "envFrom": [cm_ref("app-config", optional=True)],
            "env": [value_from("A", "secretKeyRef", "nul", "bad")],
        },
        "couldn't use key bad in Secret default/nul: its value holds a NUL byte, which no environment "
        "variable can",
        id="nul-byte",
    ),
    pytest.param(
        {"envFrom": [secret_ref("db"), cm_ref("missing")]},
        'configmap "missing" not found',
        id="second-source",
    ),
]


@pytest.mark.parametrize(("container", "message"), ERRORS)
def test_missing_objects_and_keys_are_errors(container: dict[str, Any], message: str) -> None:
    with pytest.raises(EnvSourceError) as caught:
        resolve_env(container, "default", lookup)

    assert str(caught.value) == message
    assert SECRET_VALUE not in str(caught.value)


def test_a_resolved_environment_shows_no_values() -> None:
    resolved = resolve_env({"envFrom": [secret_ref("db")]}, "default", lookup)

    assert SECRET_VALUE not in repr(resolved)
    assert SECRET_VALUE not in str(resolved)
    assert repr(resolved) == "ResolvedEnv(names=['password', 'raw', 'user'], skipped=[])"
    assert isinstance(resolved, ResolvedEnv)


INVALID_REFS = [
    pytest.param(
        f"{C}.env[0].valueFrom",
        {"configMapKeyRef": {"key": "k"}},
        f"{C}.env[0].valueFrom.configMapKeyRef.name",
        "required",
        id="key-ref-without-name",
    ),
    pytest.param(
        f"{C}.env[0].valueFrom",
        {"secretKeyRef": {"name": "db", "key": ""}},
        f"{C}.env[0].valueFrom.secretKeyRef.key",
        "required",
        id="key-ref-empty-key",
    ),
    pytest.param(
        f"{C}.env[0].valueFrom",
        {"secretKeyRef": {"name": "db"}},
        f"{C}.env[0].valueFrom.secretKeyRef.key",
        "required",
        id="key-ref-without-key",
    ),
    pytest.param(
        f"{C}.env[0].valueFrom",
        {"configMapKeyRef": {"name": "Settings", "key": "k"}},
        f"{C}.env[0].valueFrom.configMapKeyRef.name",
        "'Settings' is not a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', starting and "
        "ending with a letter or digit",
        id="key-ref-name-not-subdomain",
    ),
    pytest.param(
        f"{C}.env[0].valueFrom",
        {"configMapKeyRef": {"name": "s", "key": "a/b"}},
        f"{C}.env[0].valueFrom.configMapKeyRef.key",
        "'a/b' is not a valid key: letters, digits, '-', '_' and '.' only",
        id="key-ref-key-invalid",
    ),
    pytest.param(
        f"{C}.env[0].valueFrom",
        {"secretKeyRef": {"name": "s", "key": 5}},
        f"{C}.env[0].valueFrom.secretKeyRef.key",
        'must be a string, not a number (quote it: "5")',
        id="key-ref-key-number",
    ),
    pytest.param(
        f"{C}.env[0].valueFrom",
        {"secretKeyRef": {"name": "s", "key": "k", "optional": "yes"}},
        f"{C}.env[0].valueFrom.secretKeyRef.optional",
        "must be true or false, not a string",
        id="key-ref-optional-not-bool",
    ),
    pytest.param(
        f"{C}.env[0].valueFrom",
        {"secretKeyRef": {"name": "s", "key": "k", "namespace": "x"}},
        f"{C}.env[0].valueFrom.secretKeyRef.namespace",
        "unknown field",
        id="key-ref-unknown-field",
    ),
    pytest.param(
        f"{C}.env[0].valueFrom",
        {"configMapKeyRef": "settings"},
        f"{C}.env[0].valueFrom.configMapKeyRef",
        "must be a mapping, not a string",
        id="key-ref-not-mapping",
    ),
    pytest.param(
        f"{C}.envFrom",
        [{"configMapRef": {}}],
        f"{C}.envFrom[0].configMapRef.name",
        "required",
        id="env-from-without-name",
    ),
    pytest.param(
        f"{C}.envFrom",
        [{"secretRef": {"name": "db", "key": "password"}}],
        f"{C}.envFrom[0].secretRef.key",
        "unknown field",
        id="env-from-key",
    ),
    pytest.param(
        f"{C}.envFrom",
        [{"secretRef": {"name": "db", "optional": 1}}],
        f"{C}.envFrom[0].secretRef.optional",
        "must be true or false, not a number",
        id="env-from-optional-not-bool",
    ),
    pytest.param(
        f"{C}.envFrom",
        [{"prefix": 1, "configMapRef": {"name": "s"}}],
        f"{C}.envFrom[0].prefix",
        'must be a string, not a number (quote it: "1")',
        id="env-from-prefix-number",
    ),
    pytest.param(
        f"{C}.envFrom",
        [{"prefix": "1_", "configMapRef": {"name": "s"}}],
        f"{C}.envFrom[0].prefix",
        "'1_' is not a valid environment variable name (letters, digits, '_', '-' and '.', not starting with "
        "a digit)",
        id="env-from-prefix-invalid",
    ),
]


@pytest.mark.parametrize(("path", "value", "field", "rule"), INVALID_REFS)
def test_references_are_checked_as_kubernetes_checks_them(
    tmp_path: Path, path: str, value: object, field: str, rule: str
) -> None:
    doc = with_field(with_field(base_service(), f"{C}.env[0].value!", None), path, value)
    source = tmp_path / "service.yaml"

    with pytest.raises(ServiceFileError) as caught:
        parse_documents(dump(doc), source)

    assert caught.value.problems == [f"{source}: document 1 (Service/hello): {field}: {rule}"]
