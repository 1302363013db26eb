"""ConfigMap and Secret documents next to Services: parsed as the API server does, one table row per rule."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from serving.configdata import ConfigData, parse_config_data
from serving.service import ServiceFileError, load_files, load_manifests, parse_documents
from tests.unit.serving.servicedoc import base_service, dump, with_field, write

SECRET_VALUE = "hunter2-do-not-print"


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def config_map(name: str = "app-config", **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, **fields}


def secret(name: str = "db", **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, **fields}


def manifest_problems(tmp_path: Path, *docs: dict[str, Any]) -> list[str]:
    path = write(tmp_path, "m.yaml", *docs)
    with pytest.raises(ServiceFileError) as caught:
        load_manifests([path])
    return caught.value.problems


def only_config(tmp_path: Path, doc: dict[str, Any]) -> ConfigData:
    [data] = load_manifests([write(tmp_path, "m.yaml", doc)]).configs
    return data


VALID = [
    pytest.param(
        config_map(data={"greeting": "hello", "app.properties": "a=1\nb=2\n"}),
        {"greeting": b"hello", "app.properties": b"a=1\nb=2\n"},
        id="config-map-data-utf8",
    ),
    pytest.param(
        config_map(data={"text": "h\u00e9"}, binaryData={"logo.png": b64(b"\x89PNG\x00")}),
        {"text": "h\u00e9".encode(), "logo.png": b"\x89PNG\x00"},
        id="config-map-binary-data",
    ),
    pytest.param(config_map(), {}, id="config-map-empty"),
    pytest.param(config_map(data=None, binaryData=None), {}, id="config-map-null-sections"),
    pytest.param(
        secret(data={"password": b64(SECRET_VALUE)}), {"password": SECRET_VALUE.encode()}, id="secret-base64"
    ),
    pytest.param(
        secret(data={"user": b64("admin"), "password": b64("old")}, stringData={"password": "new"}),
        {"user": b"admin", "password": b"new"},
        id="secret-string-data-wins",
    ),
    pytest.param(
        secret(data={"cert": b64(b"x" * 100)[:40] + "\n" + b64(b"x" * 100)[40:]}),
        {"cert": b"x" * 100},
        id="secret-base64-line-breaks-ignored",
    ),
    pytest.param(secret(data={"empty": ""}), {"empty": b""}, id="secret-empty-value"),
    pytest.param(
        secret(type="kubernetes.io/tls", data={"tls.crt": b64("c"), "tls.key": b64("k")}),
        {"tls.crt": b"c", "tls.key": b"k"},
        id="secret-tls",
    ),
    pytest.param(
        secret(type="kubernetes.io/basic-auth", stringData={"username": "u"}),
        {"username": b"u"},
        id="secret-basic-auth-username-only",
    ),
    pytest.param(
        secret(type="kubernetes.io/dockerconfigjson", stringData={".dockerconfigjson": '{"auths": {}}'}),
        {".dockerconfigjson": b'{"auths": {}}'},
        id="secret-dockerconfigjson",
    ),
    pytest.param(secret(type="example.com/custom", data={}), {}, id="secret-custom-type"),
]


@pytest.mark.parametrize(("doc", "data"), VALID)
def test_accepted_as_kubernetes_accepts(tmp_path: Path, doc: dict[str, Any], data: dict[str, bytes]) -> None:
    parsed = only_config(tmp_path, doc)

    assert dict(parsed.data) == data
    assert parsed.kind == doc["kind"]
    assert parsed.secret is (doc["kind"] == "Secret")


def test_defaults_and_metadata(tmp_path: Path) -> None:
    doc = secret(
        immutable=True,
        stringData={"a": "1"},
        metadata={
            "name": "db.primary",
            "namespace": "team-a",
            "labels": {"app": "db"},
            "annotations": {"example.com/owner": "team a"},
            "uid": "1234",
        },
    )
    path = write(tmp_path, "m.yaml", base_service(), doc)

    manifests = load_manifests([path])
    [data] = manifests.configs

    assert [s.name for s in manifests.services] == ["hello"]
    assert (data.kind, data.namespace, data.name, data.immutable) == ("Secret", "team-a", "db.primary", True)
    assert data.secret_type == "Opaque"
    assert (data.source, data.document) == (path, 2)
    assert data.where == f"{path}: document 2 (Secret/db.primary)"
    assert [c.key for c in manifests.configs] == [("Secret", "team-a", "db.primary")]

    cm = only_config(tmp_path, config_map(data={"a": "1"}))
    assert (cm.namespace, cm.immutable, cm.secret_type, cm.secret) == ("default", False, None, False)


def test_binary_data_keys_are_remembered(tmp_path: Path) -> None:
    data = only_config(tmp_path, config_map(data={"a": "1"}, binaryData={"b": b64("2")}))

    assert data.binary_keys == frozenset({"b"})


def test_empty_secret_type_means_opaque(tmp_path: Path) -> None:
    assert only_config(tmp_path, secret(type="")).secret_type == "Opaque"


KEY_RULE = "is not a valid key: letters, digits, '-', '_' and '.' only"
SUBDOMAIN = (
    "is not a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', starting and ending with a letter "
    "or digit"
)

INVALID = [
    # metadata
    pytest.param(
        config_map("Settings"), "ConfigMap/Settings", "metadata.name", f"'Settings' {SUBDOMAIN}", id="name"
    ),
    pytest.param(
        config_map("a" * 254),
        f"ConfigMap/{'a' * 254}",
        "metadata.name",
        f"'{'a' * 254}' is longer than 253 characters (DNS-1123 subdomain)",
        id="name-too-long",
    ),
    pytest.param(
        with_field(config_map(), "metadata.name!", None),
        "ConfigMap/?",
        "metadata.name",
        "required",
        id="no-name",
    ),
    pytest.param(
        with_field(config_map(), "metadata.name", ""),
        "ConfigMap/",
        "metadata.name",
        "required",
        id="empty-name",
    ),
    pytest.param(
        with_field(secret(), "metadata.namespace", "team.a"),
        "Secret/db",
        "metadata.namespace",
        "'team.a' is not a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a "
        "letter or digit",
        id="namespace-not-label",
    ),
    pytest.param(
        with_field(secret(), "metadata.generateName", "db-"),
        "Secret/db",
        "metadata.generateName",
        "not supported: give the Secret a `name`",
        id="generate-name",
    ),
    pytest.param(
        with_field(config_map(), "metadata.labels", {"app": "a b"}),
        "ConfigMap/app-config",
        "metadata.labels.app",
        "'a b' is not a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a "
        "letter or digit",
        id="label-value",
    ),
    pytest.param(
        with_field(config_map(), "metadata.labelz", {}),
        "ConfigMap/app-config",
        "metadata.labelz",
        "unknown field",
        id="metadata-unknown-field",
    ),
    # top level
    pytest.param(
        with_field(config_map(), "apiVersion", "apps/v1"),
        "ConfigMap/app-config",
        "apiVersion",
        "must be 'v1', not 'apps/v1'",
        id="api-version",
    ),
    pytest.param(config_map(spec={}), "ConfigMap/app-config", "spec", "unknown field", id="config-map-spec"),
    pytest.param(
        config_map(type="Opaque"), "ConfigMap/app-config", "type", "unknown field", id="config-map-type"
    ),
    pytest.param(
        config_map(stringData={}), "ConfigMap/app-config", "stringData", "unknown field", id="cm-string-data"
    ),
    pytest.param(secret(binaryData={}), "Secret/db", "binaryData", "unknown field", id="secret-binary-data"),
    pytest.param(
        config_map(immutable="yes"),
        "ConfigMap/app-config",
        "immutable",
        "must be true or false, not a string",
        id="immutable-not-bool",
    ),
    pytest.param(
        secret(type=1),
        "Secret/db",
        "type",
        'must be a string, not a number (quote it: "1")',
        id="type-number",
    ),
    # keys
    pytest.param(
        config_map(data={"a b": "x"}), "ConfigMap/app-config", "data.a b", f"'a b' {KEY_RULE}", id="key-space"
    ),
    pytest.param(
        secret(stringData={"a/b": "x"}), "Secret/db", "stringData[a/b]", f"'a/b' {KEY_RULE}", id="key-slash"
    ),
    pytest.param(
        config_map(data={".": "x"}),
        "ConfigMap/app-config",
        "data[.]",
        "'.' is not a valid key: it must not be '.' or '..'",
        id="key-dot",
    ),
    pytest.param(
        secret(data={"..": ""}),
        "Secret/db",
        "data[..]",
        "'..' is not a valid key: it must not be '.' or '..'",
        id="key-dot-dot",
    ),
    pytest.param(
        config_map(binaryData={"..data": ""}),
        "ConfigMap/app-config",
        "binaryData[..data]",
        "'..data' is not a valid key: it must not start with '..'",
        id="key-dot-dot-prefix",
    ),
    pytest.param(
        config_map(data={"k" * 254: "x"}),
        "ConfigMap/app-config",
        f"data.{'k' * 254}",
        f"'{'k' * 254}' is longer than 253 characters",
        id="key-too-long",
    ),
    pytest.param(
        config_map(data={1: "x"}),
        "ConfigMap/app-config",
        "data.1",
        "key must be a string, not a number",
        id="key-int",
    ),
    pytest.param(
        config_map(data={"a": "1"}, binaryData={"a": b64("1")}),
        "ConfigMap/app-config",
        "data.a",
        "duplicate of a key in binaryData: a key may be in only one of them",
        id="key-in-data-and-binary-data",
    ),
    # values
    pytest.param(
        config_map(data={"port": 8080}),
        "ConfigMap/app-config",
        "data.port",
        'must be a string, not a number (quote it: "8080")',
        id="config-map-value-number",
    ),
    pytest.param(
        config_map(data={"a": None}),
        "ConfigMap/app-config",
        "data.a",
        'must be a string, not null (write "" for an empty value)',
        id="config-map-value-null",
    ),
    pytest.param(
        config_map(data=["a"]),
        "ConfigMap/app-config",
        "data",
        "must be a mapping, not a list",
        id="data-list",
    ),
    pytest.param(
        config_map(binaryData={"logo": "not base64!"}),
        "ConfigMap/app-config",
        "binaryData.logo",
        "not valid base64 (standard alphabet, padded with '='); write plain text in stringData",
        id="binary-data-not-base64",
    ),
    pytest.param(
        secret(data={"password": "cGFzcw"}),
        "Secret/db",
        "data.password",
        "not valid base64 (standard alphabet, padded with '='); write plain text in stringData",
        id="secret-base64-unpadded",
    ),
    pytest.param(
        secret(data={"password": 5}),
        "Secret/db",
        "data.password",
        "must be a base64 string, not a number",
        id="secret-data-number",
    ),
    pytest.param(
        secret(stringData={"port": 5432}),
        "Secret/db",
        "stringData.port",
        "must be a string, not a number: quote it",
        id="secret-string-data-number",
    ),
    # Secret types
    pytest.param(
        secret(type="kubernetes.io/tls", data={"tls.crt": b64("c")}),
        "Secret/db",
        "data[tls.key]",
        "required for type kubernetes.io/tls",
        id="tls-without-key",
    ),
    pytest.param(
        secret(type="kubernetes.io/ssh-auth", stringData={"ssh-privatekey": ""}),
        "Secret/db",
        "data.ssh-privatekey",
        "required for type kubernetes.io/ssh-auth",
        id="ssh-auth-empty-key",
    ),
    pytest.param(
        secret(type="kubernetes.io/basic-auth", stringData={"user": "u"}),
        "Secret/db",
        "data",
        "username or password required for type kubernetes.io/basic-auth",
        id="basic-auth-without-credentials",
    ),
    pytest.param(
        secret(type="kubernetes.io/dockercfg"),
        "Secret/db",
        "data[.dockercfg]",
        "required for type kubernetes.io/dockercfg",
        id="dockercfg-missing",
    ),
    pytest.param(
        secret(type="kubernetes.io/dockerconfigjson", stringData={".dockerconfigjson": SECRET_VALUE}),
        "Secret/db",
        "data[.dockerconfigjson]",
        "must be a JSON object for type kubernetes.io/dockerconfigjson",
        id="dockerconfigjson-not-json",
    ),
    pytest.param(
        secret(type="kubernetes.io/service-account-token"),
        "Secret/db",
        "metadata.annotations[kubernetes.io/service-account.name]",
        "required for type kubernetes.io/service-account-token",
        id="service-account-token-without-account",
    ),
]


@pytest.mark.parametrize(("doc", "label", "field", "rule"), INVALID)
def test_rejected_as_kubernetes_rejects(
    tmp_path: Path, doc: dict[str, Any], label: str, field: str, rule: str
) -> None:
    path = tmp_path / "m.yaml"
    where = f"{path}: document 1 ({label})"

    assert manifest_problems(tmp_path, doc) == [f"{where}: {field}: {rule}" if field else f"{where}: {rule}"]


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(
            config_map(data={"a": "x" * (1 << 19)}, binaryData={"b": b64(b"y" * ((1 << 19) + 1))}), id="cm"
        ),
        pytest.param(
            secret(data={"a": b64(b"x" * (1 << 19))}, stringData={"b": "y" * ((1 << 19) + 1)}), id="secret"
        ),
    ],
)
def test_values_over_one_mebibyte_are_refused(doc: dict[str, Any]) -> None:
    # Built in memory: a file holding this much is refused before parsing (aliases could still reach it).
    problems: list[str] = []
    kind = doc["kind"]

    assert parse_config_data(doc, Path("m.yaml"), 1, problems) is None
    assert problems == [
        f"m.yaml: document 1 ({kind}/{doc['metadata']['name']}): 1048577 bytes of data: over Kubernetes' "
        f"limit of 1048576 bytes (1 MiB) for a {kind}"
    ]


def test_every_problem_of_a_document_is_reported(tmp_path: Path) -> None:
    doc = config_map("Bad", data={"a b": 1}, extra=True)

    problems = manifest_problems(tmp_path, doc)

    assert [p.split(": ", 3)[2] for p in problems] == ["extra", "metadata.name", "data.a b", "data.a b"]


def test_a_file_with_only_a_config_map_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", config_map(data={"greeting": "hi"}))

    manifests = load_manifests([path])

    assert manifests.services == []
    assert [c.name for c in manifests.configs] == ["app-config"]
    assert load_files([path]) == []
    assert parse_documents(path.read_text(), path) == []


def test_config_documents_are_checked_by_parse_documents_too(tmp_path: Path) -> None:
    source = tmp_path / "s.yaml"

    with pytest.raises(ServiceFileError) as caught:
        parse_documents(dump(base_service(), config_map(data={"a": 1})), source)

    assert caught.value.problems == [
        f'{source}: document 2 (ConfigMap/app-config): data.a: must be a string, not a number (quote it: "1")'
    ]


def test_duplicate_objects_across_files_name_both(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", config_map("settings"), secret("settings"))
    second = write(tmp_path, "b.yaml", secret("settings"), config_map("other"))
    third = write(
        tmp_path, "c.yaml", with_field(config_map("settings"), "metadata.namespace", "other"), base_service()
    )

    with pytest.raises(ServiceFileError) as caught:
        load_manifests([first, second, third])

    # A ConfigMap and a Secret may share a name, as may objects in two namespaces.
    assert caught.value.problems == [
        f"{second}: document 1 (Secret/settings): metadata.name: Secret default/settings is already defined "
        f"in {first} document 2"
    ]


def test_duplicate_within_one_file(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", config_map(), config_map())

    with pytest.raises(ServiceFileError) as caught:
        load_manifests([path])

    assert caught.value.problems == [
        f"{path}: document 2 (ConfigMap/app-config): metadata.name: ConfigMap default/app-config is already "
        f"defined in {path} document 1"
    ]


def test_config_problems_come_with_every_other_problem(tmp_path: Path) -> None:
    bad_service = write(
        tmp_path, "s.yaml", with_field(base_service(), "spec.template.spec.containers[0].x", 1)
    )
    bad_config = write(tmp_path, "c.yaml", config_map(data={"a b": "1"}))

    with pytest.raises(ServiceFileError) as caught:
        load_files([bad_service, bad_config])

    assert len(caught.value.problems) == 2


SECRET_DOCS = [
    pytest.param(secret(data={"password": SECRET_VALUE}), id="value-not-base64"),
    pytest.param(secret(stringData={"password": [SECRET_VALUE]}), id="string-data-list"),
    pytest.param(secret(data={"password": {SECRET_VALUE: 1}}), id="data-mapping"),
    pytest.param(secret(stringData={"password": {"v": SECRET_VALUE}}), id="string-data-mapping"),
    pytest.param(
        secret(type="kubernetes.io/dockercfg", stringData={".dockercfg": SECRET_VALUE}), id="docker-config"
    ),
    pytest.param(
        secret("Bad", type="kubernetes.io/tls", stringData={"tls.crt": SECRET_VALUE, "x y": SECRET_VALUE}),
        id="other-problems",
    ),
]


@pytest.mark.parametrize("doc", SECRET_DOCS)
def test_secret_values_never_appear_in_messages(tmp_path: Path, doc: dict[str, Any]) -> None:
    problems = manifest_problems(tmp_path, doc)

    assert problems
    assert all(SECRET_VALUE not in p and b64(SECRET_VALUE) not in p for p in problems)


def test_secret_values_never_appear_in_a_repr(tmp_path: Path) -> None:
    path = write(
        tmp_path, "m.yaml", secret(data={"password": b64(SECRET_VALUE)}, stringData={"token": SECRET_VALUE})
    )

    manifests = load_manifests([path])
    [data] = manifests.configs

    for text in (repr(data), str(data), repr(manifests), f"{data}"):
        assert SECRET_VALUE not in text
        assert b64(SECRET_VALUE) not in text
    assert repr(data) == (
        f"ConfigData(kind='Secret', namespace='default', name='db', keys=['password', 'token'], "
        f"immutable=False, source={str(path)!r}, document=1)"
    )
