"""Volumes of a revision template, checked as Knative and the API server check them: which sources, each
source's fields (`items` paths, modes), and the mounts.

Locally a container pod gets its volumes (`controller.local.runtime.volume`); a process pod cannot have any.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any, Final

from serving.validation import FieldReader, dns1123_label_problem, join

VOLUME_SOURCES: Final = ("secret", "configMap", "projected", "emptyDir")
"""Volume sources Knative accepts by default."""
_VOLUME_DISALLOWED: Final = {
    key: f"not allowed: needs Knative's feature flag kubernetes.podspec-{flag}"
    for key, flag in (
        ("persistentVolumeClaim", "persistent-volume-claim"),
        ("hostPath", "volumes-hostpath"),
        ("csi", "volumes-csi"),
        ("ephemeral", "volumes-ephemeral"),
        ("image", "volumes-image"),
    )
}
_RESERVED_PATHS: Final = frozenset({"/", "/dev", "/dev/log"})


def check_volumes(r: FieldReader, spec: Mapping[str, Any], path: str) -> None:
    """Knative's volume rules: each volume has one source and is mounted; each mount names a volume."""
    volumes: dict[str, bool] = {}  # name -> whether writable mounts are allowed (emptyDir)
    for i, item in enumerate(r.sequence(spec.get("volumes"), join(path, "volumes")) or ()):
        where = f"{path}.volumes[{i}]"
        entry = r.mapping(item, where)
        if entry is None:
            continue
        r.fields(entry, where, {"name", *VOLUME_SOURCES}, _VOLUME_DISALLOWED)
        name = r.string(entry, "name", where, required=True)
        r.check(join(where, "name"), name, dns1123_label_problem)
        sources = [k for k in (*VOLUME_SOURCES, *_VOLUME_DISALLOWED) if k in entry]
        if len(sources) != 1:
            r.add(where, f"expected exactly one of {', '.join(VOLUME_SOURCES)}")
        for source in sources:
            _check_source(r, entry.get(source), join(where, source), source)
        if name is not None:
            if name in volumes:
                r.add(join(where, "name"), f"duplicate volume name {name!r}")
            volumes[name] = sources == ["emptyDir"]
    mounted: set[str] = set()
    containers = spec.get("containers")
    for index, container in enumerate(containers if isinstance(containers, list) else ()):
        if isinstance(container, Mapping):
            mounts_path = f"{path}.containers[{index}].volumeMounts"
            mounted |= _check_mounts(r, container.get("volumeMounts"), mounts_path, volumes, path)
    for name in volumes.keys() - mounted:
        r.add(f"{path}.volumes", f"volume {name!r} is not mounted")


def _check_mounts(
    r: FieldReader, raw_mounts: object, mounts_path: str, volumes: Mapping[str, bool], path: str
) -> set[str]:
    """One container's mounts; the names of the volumes it mounts."""
    mounted: set[str] = set()
    paths: set[str] = set()
    for i, item in enumerate(r.sequence(raw_mounts, mounts_path) or ()):
        where = f"{mounts_path}[{i}]"
        mount = r.mapping(item, where)
        if mount is None:
            continue
        r.fields(mount, where, {"name", "mountPath", "readOnly", "subPath"})
        sub_path = r.string(mount, "subPath", where)
        if sub_path and (sub_path.startswith("/") or ".." in sub_path.split("/")):
            r.add(join(where, "subPath"), f"{sub_path!r} must be a relative path without '..'")
        name = r.string(mount, "name", where, required=True)
        if name is not None:
            mounted.add(name)
            if name not in volumes:
                r.add(join(where, "name"), f"no volume named {name!r} in {path}.volumes")
            elif not volumes[name] and r.boolean(mount, "readOnly", where) is not True:
                r.add(join(where, "readOnly"), "must be true for this type of volume (Knative rule)")
        mount_path = r.string(mount, "mountPath", where, required=True)
        if mount_path is not None:
            clean = posixpath.normpath(mount_path)
            if not mount_path.startswith("/"):
                r.add(join(where, "mountPath"), f"{mount_path!r} must be an absolute path")
            elif clean in _RESERVED_PATHS:
                r.add(join(where, "mountPath"), f"{clean!r} is a reserved path")
            elif clean in paths:
                r.add(join(where, "mountPath"), f"{mount_path!r} is mounted twice")
            paths.add(clean)
    return mounted


_MAX_MODE: Final = 0o777
_SOURCE_FIELDS: Final = {
    "configMap": ({"name", "items", "defaultMode", "optional"}, "name"),
    "secret": ({"secretName", "items", "defaultMode", "optional"}, "secretName"),
    "emptyDir": ({"medium", "sizeLimit"}, None),
    "projected": ({"sources", "defaultMode"}, None),
}
_PROJECTION_FIELDS: Final = {
    "configMap": ({"name", "items", "optional"}, "name"),
    "secret": ({"name", "items", "optional"}, "name"),
    "downwardAPI": ({"items"}, None),
    "serviceAccountToken": ({"audience", "expirationSeconds", "path"}, None),
}


def _check_source(r: FieldReader, raw: object, path: str, kind: str) -> None:
    """A volume source's own fields (the API server's rules for the ones Knative accepts)."""
    if kind not in _SOURCE_FIELDS:
        return
    source = r.mapping(raw, path) if raw is not None else {}
    if source is None:
        return
    fields, name_field = _SOURCE_FIELDS[kind]
    r.fields(source, path, fields)
    _check_named(r, source, path, name_field)
    r.integer(source, "defaultMode", path, 0, _MAX_MODE, why="a file mode, 0 to 0777")
    if kind == "emptyDir":
        medium = r.string(source, "medium", path)
        if medium not in (None, "", "Memory"):
            r.add(join(path, "medium"), f'{medium!r} is not supported: use "" (disk) or Memory')
    if kind == "projected":
        for i, item in enumerate(r.sequence(source.get("sources"), join(path, "sources")) or ()):
            where = f"{path}.sources[{i}]"
            projection = r.mapping(item, where)
            if projection is None:
                continue
            r.fields(projection, where, set(_PROJECTION_FIELDS))
            if len(projection) != 1:
                r.add(where, f"expected exactly one of {', '.join(_PROJECTION_FIELDS)}")
            for key, value in projection.items():
                if key in _PROJECTION_FIELDS:
                    inner = r.mapping(value, join(where, key))
                    if inner is not None:
                        inner_fields, inner_name = _PROJECTION_FIELDS[key]
                        r.fields(inner, join(where, key), inner_fields)
                        _check_named(r, inner, join(where, key), inner_name)


def _check_named(r: FieldReader, source: Mapping[str, Any], path: str, name_field: str | None) -> None:
    """The object a configMap or secret source names, whether it is optional, and its `items`."""
    if name_field is None:
        return
    r.string(source, name_field, path, required=True)
    r.boolean(source, "optional", path)
    for i, item in enumerate(r.sequence(source.get("items"), join(path, "items")) or ()):
        where = f"{path}.items[{i}]"
        entry = r.mapping(item, where)
        if entry is None:
            continue
        r.fields(entry, where, {"key", "path", "mode"})
        r.string(entry, "key", where, required=True)
        item_path = r.string(entry, "path", where, required=True)
        if item_path is not None and (
            item_path.startswith("/") or ".." in item_path.split("/") or not item_path.strip()
        ):
            r.add(join(where, "path"), f"{item_path!r} must be a relative path without '..'")
        r.integer(entry, "mode", where, 0, _MAX_MODE, why="a file mode, 0 to 0777")
