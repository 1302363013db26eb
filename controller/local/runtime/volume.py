"""Volumes of local container pods: ConfigMap, Secret and projected volumes written as files under the state
folder and bind-mounted, and emptyDirs (a folder; for `medium: Memory` one on /dev/shm, a tmpfs).

Files are laid out as the kubelet lays them out (`..<timestamp>/` holding the files, `..data` pointing at it,
each top-level name a link through `..data`), so that a changed ConfigMap or Secret is swapped in with one
rename and a running app sees every file of the new version at once, or none of it. A volume lives as long as
its pod: container restarts keep it (an emptyDir's files survive a crash), the pod's end removes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from serving.configdata import CONFIG_MAP, SECRET
from serving.envsource import EnvSourceError, Lookup

log = logging.getLogger(__name__)

DATA: Final = "..data"
DEFAULT_MODE: Final = 0o644
"""Kubernetes' default file mode for ConfigMap, Secret and projected volumes."""


@dataclass(frozen=True, slots=True)
class _File:
    path: str
    """Relative to the volume (`items[].path`, or the key)."""
    data: bytes
    mode: int


Raw = Mapping[str, Any]


def _items(
    lookup: Lookup,
    kind: str,
    namespace: str,
    source: Mapping[str, Any],
    name_field: str,
    mode: int,
    volume: str,
) -> list[_File]:
    """The files one ConfigMap or Secret projects: every key, or the `items` named; a missing object or key
    not marked optional is an error, as the kubelet's FailedMount."""
    name = str(source.get(name_field) or "")
    optional = source.get("optional") is True
    found = lookup(kind, namespace, name)
    what = "configmap" if kind == CONFIG_MAP else "secret"
    if found is None:
        if optional:
            return []
        raise EnvSourceError(f'volume "{volume}": {what} "{name}" not found')
    items = source.get("items")
    if not isinstance(items, list) or not items:
        return [_File(key, value, mode) for key, value in sorted(found.data.items())]
    files = []
    for item in items:
        key = str(item.get("key"))
        if key not in found.data:
            if optional:
                continue
            raise EnvSourceError(f'volume "{volume}": couldn\'t find key {key} in {kind} {namespace}/{name}')
        item_mode = item.get("mode")
        files.append(
            _File(
                str(item.get("path") or key),
                found.data[key],
                item_mode if isinstance(item_mode, int) else mode,
            )
        )
    return files


def projected_files(volume: Mapping[str, Any], namespace: str, lookup: Lookup) -> list[_File] | None:
    """The files of a configMap, secret or projected volume as its sources are now; None for an emptyDir."""
    name = str(volume.get("name"))
    if "configMap" in volume:
        source = volume["configMap"]
        mode = source.get("defaultMode", DEFAULT_MODE)
        return _items(lookup, CONFIG_MAP, namespace, source, "name", mode, name)
    if "secret" in volume:
        source = volume["secret"]
        mode = source.get("defaultMode", DEFAULT_MODE)
        return _items(lookup, SECRET, namespace, source, "secretName", mode, name)
    if "projected" in volume:
        projected = volume["projected"]
        mode = projected.get("defaultMode", DEFAULT_MODE)
        files: list[_File] = []
        for source in projected.get("sources") or ():
            if "configMap" in source:
                files += _items(lookup, CONFIG_MAP, namespace, source["configMap"], "name", mode, name)
            elif "secret" in source:
                files += _items(lookup, SECRET, namespace, source["secret"], "name", mode, name)
        return files
    return None


def _current(root: Path) -> dict[str, tuple[bytes, int]]:
    """What the volume holds now (path -> data, mode), read through `..data`."""
    data = root / DATA
    if not data.is_dir():
        return {}
    found = {}
    for path in data.rglob("*"):
        if path.is_file():
            found[str(path.relative_to(data))] = (path.read_bytes(), path.stat().st_mode & 0o7777)
    return found


def write_atomically(root: Path, files: Sequence[_File]) -> bool:
    """Make `root` hold exactly `files`, swapped in at once; False when it already did."""
    wanted = {f.path: (f.data, f.mode) for f in files}
    if root.is_dir() and _current(root) == wanted:
        return False
    root.mkdir(parents=True, exist_ok=True)
    stamp = root / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir()
    for f in files:
        target = stamp / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.data)
        target.chmod(f.mode)
    old = os.readlink(root / DATA) if (root / DATA).is_symlink() else None
    link = root / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(stamp.name)
    link.replace(root / DATA)  # the one atomic step: readers see the old version or the new one
    tops = {posixpath.normpath(f.path).split("/")[0] for f in files}
    for entry in root.iterdir():
        if not entry.name.startswith("..") and entry.name not in tops:
            entry.unlink()
    for top in tops:
        if not (root / top).is_symlink():
            (root / top).symlink_to(f"{DATA}/{top}")
    if old is not None:
        shutil.rmtree(root / old, ignore_errors=True)
    return True


class PodVolumes:
    """One pod's volumes under `root`, and the runtime flags that mount them into its container."""

    def __init__(self, root: Path, volumes: Sequence[Raw], namespace: str, memory_root: Path) -> None:
        self.root = root
        self.memory_root = memory_root
        """Where `medium: Memory` emptyDirs live: a folder on a tmpfs, shared by the pod's containers and
        kept across their restarts, as the kubelet's memory-backed emptyDir is."""
        self._volumes = {str(v.get("name")): v for v in volumes}
        self._namespace = namespace

    def _dir(self, name: str) -> Path:
        return (self.memory_root if _memory(self._volumes[name]) else self.root) / name

    def prepare(self, lookup: Lookup, mounts: Sequence[Raw]) -> tuple[str, ...]:
        """Write every volume as its sources are now; the `--volume`/`--mount` flags of a container's
        `mounts`. Raises `EnvSourceError` for a missing ConfigMap, Secret or key not marked optional."""
        for name, volume in self._volumes.items():
            files = projected_files(volume, self._namespace, lookup)
            if files is None:
                folder = self._dir(name)
                if not folder.is_dir():
                    folder.mkdir(parents=True)
                    folder.chmod(0o777)  # as the kubelet's emptyDir: any user of the container writes
            else:
                write_atomically(self.root / name, files)
        return self._flags(mounts)

    def refresh(self, lookup: Lookup) -> list[str]:
        """Rewrite the volumes whose sources changed (a running app sees the new files); the names of those
        rewritten. A source that is gone now leaves its files as they were, as the kubelet does."""
        changed = []
        for name, volume in self._volumes.items():
            try:
                files = projected_files(volume, self._namespace, lookup)
                if files is not None and write_atomically(self.root / name, files):
                    changed.append(name)
            except (
                EnvSourceError,
                OSError,
            ) as exc:  # the files stay as they were, as the kubelet leaves them
                log.warning("pod volume %s not updated: %s", self.root / name, exc)
        return changed

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.memory_root, ignore_errors=True)

    def _flags(self, mounts: Sequence[Raw]) -> tuple[str, ...]:
        flags: list[str] = []
        for mount in mounts:
            volume = self._volumes[str(mount.get("name"))]
            target = str(mount.get("mountPath"))
            read_only = mount.get("readOnly") is True
            source = self._dir(str(mount.get("name")))
            sub_path = mount.get("subPath")
            if sub_path:
                source = source / str(sub_path)
                if "emptyDir" in volume:
                    source.mkdir(parents=True, exist_ok=True)  # the kubelet creates a missing subPath folder
            flags += ["--volume", f"{source}:{target}" + (":ro" if read_only else "")]
        return tuple(flags)


SHM: Final = Path("/dev/shm")


def _memory_root(root: Path) -> Path:
    """A folder on /dev/shm (a tmpfs on Linux) named for `root`, else beside `root`."""
    if not SHM.is_dir():
        return root.with_name(f"{root.name}-memory")
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return SHM / f"serving-{digest}"


def _memory(volume: Mapping[str, Any]) -> bool:
    empty = volume.get("emptyDir")
    return isinstance(empty, Mapping) and empty.get("medium") == "Memory"


class VolumeSet:
    """The volumes of every running container pod, so that a changed ConfigMap or Secret reaches them."""

    def __init__(self, root: Path, memory_root: Path | None = None) -> None:
        """`root` (made 0700: Secret files go there) and `memory_root` (default: a folder on /dev/shm, where
        there is one) are emptied first: volumes of pods a killed `serving up` left behind are removed."""
        self.root = root
        self.memory_root = memory_root or _memory_root(root)
        for folder in (self.root, self.memory_root):
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):  # made when a pod needs it, if this fails
                folder.mkdir(parents=True, mode=0o700)
        self._pods: dict[str, PodVolumes] = {}

    def for_pod(self, pod: str, volumes: Sequence[Raw], namespace: str) -> PodVolumes:
        """The pod's volumes, made at its first container start and kept across restarts."""
        found = self._pods.get(pod)
        if found is None:
            found = self._pods[pod] = PodVolumes(self.root / pod, volumes, namespace, self.memory_root / pod)
        return found

    def release(self, pod: str) -> None:
        """The pod ended: its volumes (and its containers' env files, kept beside them) go."""
        self._pods.pop(pod, None)
        shutil.rmtree(self.root / pod, ignore_errors=True)
        shutil.rmtree(self.memory_root / pod, ignore_errors=True)

    def refresh(self, lookup: Lookup) -> list[str]:
        """Bring every pod's ConfigMap, Secret and projected volumes up to date; `pod/volume` of each
        rewritten."""
        return [f"{pod}/{name}" for pod, volumes in self._pods.items() for name in volumes.refresh(lookup)]
