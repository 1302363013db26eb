"""Container pods' volumes on disk: the kubelet's atomic layout, `items`, modes, optional sources, in-place
updates, and the runtime flags that mount them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import pytest

from controller.local.runtime.volume import DATA, VolumeSet, projected_files, write_atomically
from serving.configdata import CONFIG_MAP, SECRET, ConfigData
from serving.envsource import EnvSourceError


def config(kind: Literal["ConfigMap", "Secret"], name: str, **data: bytes) -> ConfigData:
    return ConfigData(kind=kind, namespace="default", name=name, data=data, source=Path("c.yaml"), document=1)


class Objects:
    def __init__(self, *objects: ConfigData) -> None:
        self.objects = {o.key: o for o in objects}

    def __call__(self, kind: str, namespace: str, name: str) -> ConfigData | None:
        return self.objects.get((kind, namespace, name))


def test_a_config_map_volume_is_every_key_through_data(tmp_path: Path) -> None:
    lookup = Objects(config(CONFIG_MAP, "app", greeting=b"hello", color=b"blue"))
    files = projected_files({"name": "v", "configMap": {"name": "app"}}, "default", lookup)
    assert files is not None
    assert write_atomically(tmp_path / "v", files)
    root = tmp_path / "v"
    assert (root / "greeting").read_bytes() == b"hello"
    assert os.readlink(root / "greeting") == f"{DATA}/greeting"
    assert (root / "color").stat().st_mode & 0o777 == 0o644
    assert not write_atomically(root, files)  # unchanged: nothing rewritten


def test_an_update_swaps_every_file_at_once_and_drops_removed_keys(tmp_path: Path) -> None:
    root = tmp_path / "v"
    first = projected_files(
        {"name": "v", "configMap": {"name": "app"}},
        "default",
        Objects(config(CONFIG_MAP, "app", a=b"1", b=b"2")),
    )
    assert first is not None
    write_atomically(root, first)
    old_target = os.readlink(root / DATA)
    second = projected_files(
        {"name": "v", "configMap": {"name": "app"}}, "default", Objects(config(CONFIG_MAP, "app", a=b"3"))
    )
    assert second is not None
    assert write_atomically(root, second)
    assert (root / "a").read_bytes() == b"3"
    assert not (root / "b").exists()
    assert not (root / old_target).exists()  # the previous version is gone once swapped out
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith("..")) == ["a"]


def test_items_modes_and_nested_paths(tmp_path: Path) -> None:
    lookup = Objects(config(SECRET, "db", password=b"pw", user=b"admin"))
    volume = {
        "name": "creds",
        "secret": {
            "secretName": "db",
            "defaultMode": 0o400,
            "items": [{"key": "password", "path": "db/pass", "mode": 0o440}, {"key": "user", "path": "user"}],
        },
    }
    files = projected_files(volume, "default", lookup)
    assert files is not None
    write_atomically(tmp_path / "creds", files)
    assert (tmp_path / "creds" / "db" / "pass").read_bytes() == b"pw"
    assert (tmp_path / "creds" / "db" / "pass").stat().st_mode & 0o777 == 0o440
    assert (tmp_path / "creds" / "user").stat().st_mode & 0o777 == 0o400


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        pytest.param(
            {"name": "v", "configMap": {"name": "nope"}},
            'volume "v": configmap "nope" not found',
            id="missing-configmap",
        ),
        pytest.param(
            {"name": "v", "secret": {"secretName": "nope"}},
            'volume "v": secret "nope" not found',
            id="missing-secret",
        ),
        pytest.param(
            {"name": "v", "configMap": {"name": "app", "items": [{"key": "absent", "path": "x"}]}},
            'volume "v": couldn\'t find key absent in ConfigMap default/app',
            id="missing-key",
        ),
    ],
)
def test_a_missing_source_is_an_error_unless_optional(volume: dict[str, object], message: str) -> None:
    lookup = Objects(config(CONFIG_MAP, "app", greeting=b"hi"))
    with pytest.raises(EnvSourceError) as caught:
        projected_files(volume, "default", lookup)
    assert str(caught.value) == message
    source = next(v for k, v in volume.items() if k != "name")
    assert isinstance(source, dict)
    assert (
        projected_files(
            {**volume, **{k: {**source, "optional": True} for k in volume if k != "name"}}, "default", lookup
        )
        == []
    )


def test_projected_volumes_merge_their_sources(tmp_path: Path) -> None:
    lookup = Objects(config(CONFIG_MAP, "app", greeting=b"hi"), config(SECRET, "db", password=b"pw"))
    volume = {
        "name": "all",
        "projected": {"sources": [{"configMap": {"name": "app"}}, {"secret": {"name": "db"}}]},
    }
    files = projected_files(volume, "default", lookup)
    assert sorted((f.path, f.data) for f in files or []) == [("greeting", b"hi"), ("password", b"pw")]


def test_pod_volumes_mount_flags_refresh_and_release(tmp_path: Path) -> None:
    objects = Objects(config(CONFIG_MAP, "app", greeting=b"hello"))
    volumes = VolumeSet(tmp_path / "volumes", tmp_path / "memory")
    mounts: list[dict[str, object]] = [
        {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True},
        {"name": "scratch", "mountPath": "/tmp/work"},
        {"name": "mem", "mountPath": "/dev/shm/x"},
        {"name": "cfg", "mountPath": "/etc/greeting", "subPath": "greeting", "readOnly": True},
    ]
    pod = volumes.for_pod(
        "hello-00001-abcde",
        [
            {"name": "cfg", "configMap": {"name": "app"}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "mem", "emptyDir": {"medium": "Memory"}},
        ],
        "default",
    )
    flags = pod.prepare(objects, mounts)
    root = tmp_path / "volumes" / "hello-00001-abcde"
    assert flags == (
        "--volume",
        f"{root / 'cfg'}:/etc/cfg:ro",
        "--volume",
        f"{root / 'scratch'}:/tmp/work",
        "--volume",
        f"{tmp_path / 'memory' / 'hello-00001-abcde' / 'mem'}:/dev/shm/x",
        "--volume",
        f"{root / 'cfg' / 'greeting'}:/etc/greeting:ro",
    )
    assert (root / "scratch").is_dir()
    assert volumes.for_pod("hello-00001-abcde", [], "default") is pod  # kept across container restarts

    objects.objects[(CONFIG_MAP, "default", "app")] = config(CONFIG_MAP, "app", greeting=b"changed")
    assert volumes.refresh(objects) == ["hello-00001-abcde/cfg"]
    assert (root / "cfg" / "greeting").read_bytes() == b"changed"
    del objects.objects[(CONFIG_MAP, "default", "app")]
    assert volumes.refresh(objects) == []  # a deleted source leaves the files as they were
    assert (root / "cfg" / "greeting").read_bytes() == b"changed"

    volumes.release("hello-00001-abcde")
    assert not root.exists()
