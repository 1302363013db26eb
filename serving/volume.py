"""Volumes of a revision template, checked as Knative checks them.

The local platform has no volumes (see `serving.template.local_template_problems`), but a file that declares
them must still be valid for Knative on Kubernetes.
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
        if name is not None:
            if name in volumes:
                r.add(join(where, "name"), f"duplicate volume name {name!r}")
            volumes[name] = sources == ["emptyDir"]
    mounted: set[str] = set()
    paths: set[str] = set()
    containers = spec.get("containers")
    first = containers[0] if isinstance(containers, list) and containers else None
    raw_mounts = first.get("volumeMounts") if isinstance(first, Mapping) else None
    mounts_path = f"{path}.containers[0].volumeMounts"
    for i, item in enumerate(r.sequence(raw_mounts, mounts_path) or ()):
        where = f"{mounts_path}[{i}]"
        mount = r.mapping(item, where)
        if mount is None:
            continue
        r.fields(mount, where, {"name", "mountPath", "readOnly", "subPath"})
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
    for name in volumes.keys() - mounted:
        r.add(f"{path}.volumes", f"volume {name!r} is not mounted")
