"""Test images made without a registry: a static busybox serving HTTP and CGI, and a Debian Python base that
`FROM python:3.7-slim` Dockerfiles build against; each is built once per machine under a file lock."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import io
import json
import logging
import os
import re
import shutil
import ssl
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final

from controller.local.runtime.ulimit import ulimit_args

logger = logging.getLogger(__name__)

BUSYBOX_IMAGE: Final = "localhost/serving-test-busybox:1"
"""Bump the tag whenever the image's content changes: an existing image of that tag is reused as is."""
PYTHON_VERSION: Final = 1
"""Version of the Python image and of its cached root filesystem (python-bookworm-<N>.tar): bump it whenever
their content changes."""
PYTHON_IMAGE: Final = f"localhost/serving-test-python:{PYTHON_VERSION}"
PYTHON_ALIASES: Final = ("docker.io/library/python:3.7-slim",)
"""Also tagged on the Python image, so that Dockerfiles written for the official image build unchanged."""
DEBIAN_MIRROR: Final = "http://deb.debian.org/debian"
DEBIAN_SUITE: Final = "bookworm"
BUSYBOX: Final = Path("/bin/busybox")
PATH_ENV: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MTIME: Final = 946684800
"""Every file of the busybox image is dated 2000-01-01, so that the same inputs give the same layer."""


class ContainerError(Exception):
    """A container runtime, a tool or an image build failed; the message says what to install or read."""


def cache_dir() -> Path:
    """Where built root filesystems and the build locks live: $XDG_CACHE_HOME/serving/images, by default
    ~/.cache/serving/images."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "serving" / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def build_lock(name: str) -> Iterator[None]:
    """Held while an image is checked for and built, so that concurrent test sessions build it once."""
    with (cache_dir() / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _call(argv: Sequence[str], *, timeout: float = 300) -> str:
    """Run `argv`; its stdout, or ContainerError with its output when it fails."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ContainerError(f"{argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise ContainerError(f"{' '.join(argv)} did not finish within {timeout:.0f}s") from exc
    if done.returncode != 0:
        raise ContainerError(
            f"{' '.join(argv)} exited with {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done.stdout


def _require(runtime: str) -> None:
    if shutil.which(runtime) is None:
        raise ContainerError(f"{runtime} is not installed (Debian: apt-get install podman runc)")


def image_exists(runtime: str, ref: str) -> bool:
    """Whether `ref` is in the runtime's local storage."""
    _require(runtime)
    argv = [runtime, "image", "exists", ref] if is_podman(runtime) else [runtime, "image", "inspect", ref]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def is_podman(runtime: str) -> bool:
    """Whether `runtime` names podman (`podman`, `/usr/bin/podman`) rather than docker."""
    return Path(runtime).name.startswith("podman")


def run_flags(runtime: str = "podman") -> tuple[str, ...]:
    """Flags for every `RUNTIME run` and `RUNTIME build`: podman's default limits exceed the hard limits of
    some hosts (see `controller.local.runtime.ulimit`); docker's daemon applies its own."""
    return ulimit_args() if is_podman(runtime) else ()


@functools.cache
def runtime_argv(runtime: str = "podman") -> tuple[str, ...]:
    """The command that runs containers: `runtime`, plus `--runtime runc` where podman's default OCI runtime
    (crun, on some hosts) cannot start a container and runc can; probed once per process."""
    _require(runtime)
    if not is_podman(runtime):
        return (runtime,)
    oci = _call([runtime, "info", "--format", "{{.Host.OCIRuntime.Name}}"]).strip()
    if oci == "runc" or shutil.which("runc") is None:
        return (runtime,)
    probe = ["run", "--rm", *run_flags(runtime), busybox_image(runtime), "true"]
    if subprocess.run([runtime, *probe], capture_output=True, timeout=120, check=False).returncode == 0:
        return (runtime,)
    fallback = (runtime, "--runtime", "runc")
    if subprocess.run([*fallback, *probe], capture_output=True, timeout=120, check=False).returncode == 0:
        return fallback
    return (runtime,)


def _import(runtime: str, tar: Path, ref: str, changes: Sequence[str]) -> None:
    options = [arg for change in changes for arg in ("--change", change)]
    _call([runtime, "import", *options, str(tar), ref], timeout=600)


# --- busybox ------------------------------------------------------------------------------------------------

BUSYBOX_CMD: Final = 'exec httpd -f -v -p "0.0.0.0:${PORT:-8080}" -h /www'
CGI_SCRIPTS: Final = {
    # The process environment: busybox httpd hands its own environment down to CGI children, plus the
    # CGI variables (QUERY_STRING, REQUEST_METHOD, ...).
    "env": r"""#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
exec env
""",
    # The file named by the query string (`/cgi-bin/file?/etc/config/greeting`), 404 when there is none.
    "file": r"""#!/bin/sh
path=$(httpd -d "$QUERY_STRING")
if [ -f "$path" ] && [ -r "$path" ]; then
  printf 'Content-Type: text/plain\r\n\r\n'
  exec cat "$path"
fi
printf 'Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno such file: %s\n' "$path"
""",
    # Sleeps as many seconds as the query string says (fractions allowed), then answers `slept`.
    "sleep": r"""#!/bin/sh
sleep "$(httpd -d "${QUERY_STRING:-1}")"
printf 'Content-Type: text/plain\r\n\r\nslept\n'
""",
}


def is_static_elf(path: Path) -> bool:
    """Whether `path` is an ELF executable without a program interpreter (statically linked)."""
    with path.open("rb") as file:
        header = file.read(64)
        if len(header) < 64 or header[:4] != b"\x7fELF":
            return False
        order = "<" if header[5] == 1 else ">"
        if header[4] == 2:  # ELFCLASS64
            (phoff,) = struct.unpack_from(order + "Q", header, 0x20)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 0x36)
        else:
            (phoff,) = struct.unpack_from(order + "I", header, 0x1C)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 0x2A)
        file.seek(phoff)
        table = file.read(phentsize * phnum)
    pt_interp = 3
    return all(
        struct.unpack_from(order + "I", table, i * phentsize)[0] != pt_interp
        for i in range(phnum)
        if (i + 1) * phentsize <= len(table)
    )


def _busybox_applets() -> list[str]:
    """Where each applet of the host's busybox belongs (`bin/sh`, `usr/sbin/httpd`, ...)."""
    listed = _call([str(BUSYBOX), "--list-full"]).split()
    return sorted(
        path for path in listed if re.fullmatch(r"(usr/)?s?bin/[\w.\[-]+", path) and path != "bin/busybox"
    )


def busybox_rootfs() -> bytes:
    """The busybox image's root filesystem, as an uncompressed tar."""
    if not BUSYBOX.is_file() or not is_static_elf(BUSYBOX):
        raise ContainerError(
            f"{BUSYBOX} is missing or not statically linked: the test images need busybox-static "
            "(Debian: apt-get install busybox-static)"
        )
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.linkname, info.size = kind, mode, MTIME, link, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for directory in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home", "var"):
            add(directory, tarfile.DIRTYPE, 0o755)
        for directory in ("proc", "sys", "dev", "run", "www", "www/cgi-bin"):
            add(directory, tarfile.DIRTYPE, 0o755)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        add("var/tmp", tarfile.DIRTYPE, 0o1777)
        add("bin/busybox", tarfile.REGTYPE, 0o755, BUSYBOX.read_bytes())
        for applet in _busybox_applets():
            add(applet, tarfile.SYMTYPE, 0o777, link="/bin/busybox")
        passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
        add("etc/passwd", tarfile.REGTYPE, 0o644, passwd.encode())
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\nnogroup:x:65534:\n")
        add("www/index.html", tarfile.REGTYPE, 0o644, b"hello from busybox\n")
        for name, script in CGI_SCRIPTS.items():
            add(f"www/cgi-bin/{name}", tarfile.REGTYPE, 0o755, script.encode())
    return out.getvalue()


def busybox_image(runtime: str = "podman") -> str:
    """A tiny image (the host's static busybox) whose command serves HTTP on $PORT (default 8080) with
    busybox httpd in the foreground: `/` says `hello from busybox`; `/cgi-bin/env` prints the process
    environment; `/cgi-bin/file?PATH` prints the file at PATH (404 when missing); `/cgi-bin/sleep?SECONDS`
    answers `slept` after that long. Run it with `--init`: httpd then stops at once on SIGTERM. Built when
    missing; returns its reference."""
    if image_exists(runtime, BUSYBOX_IMAGE):
        return BUSYBOX_IMAGE
    with build_lock("busybox"):
        if not image_exists(runtime, BUSYBOX_IMAGE):
            with tempfile.TemporaryDirectory(prefix="serving-busybox-") as tmp:
                tar = Path(tmp) / "rootfs.tar"
                tar.write_bytes(busybox_rootfs())
                changes = [
                    f"ENV {PATH_ENV}",
                    "WORKDIR /www",
                    f"CMD {_json_argv('/bin/sh', '-c', BUSYBOX_CMD)}",
                ]
                _import(runtime, tar, BUSYBOX_IMAGE, changes)
    return BUSYBOX_IMAGE


def _json_argv(*argv: str) -> str:
    """An exec-form instruction's argument: `["/bin/sh", "-c", "..."]`."""
    return json.dumps(list(argv))


# --- python -------------------------------------------------------------------------------------------------

PYTHON_PACKAGES: Final = ("python3", "python3-pip", "python3-venv")


def _mount_points_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first (a failed debootstrap may leave /proc mounted)."""
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == str(root) or point.startswith(f"{root}/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def _remove_tree(root: Path) -> None:
    for point in _mount_points_under(root):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    shutil.rmtree(root, ignore_errors=True)


def _debootstrap(target: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise ContainerError("debootstrap is not installed (Debian: apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise ContainerError("debootstrap needs root to build the Python test image's root filesystem")
    include = ",".join(PYTHON_PACKAGES)
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={include}",
        DEBIAN_SUITE,
        str(target),
        DEBIAN_MIRROR,
    ]
    _call(argv, timeout=3600)


def _like_official_python(root: Path) -> None:
    """Make the Debian root filesystem behave like the official python image where Dockerfiles rely on
    it: `python` and `pip` on PATH, and `pip install` into the system (no PEP 668 "externally managed"
    refusal)."""
    for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    for name, target in (("python", "python3"), ("pip", "pip3")):
        if not any(os.path.lexists(root / bin_dir / name) for bin_dir in ("usr/local/bin", "usr/bin")):
            (root / "usr/local/bin" / name).symlink_to(f"/usr/bin/{target}")
    # The host's name and resolver, copied by debootstrap: the runtime provides the container's own.
    for name in ("etc/hostname", "etc/resolv.conf"):
        with contextlib.suppress(FileNotFoundError):
            (root / name).unlink()
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*"):
        for path in root.glob(pattern):
            path.unlink()


def _tar_member(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Numeric owners only; no device nodes or kernel file systems' contents (the runtime mounts its own)."""
    if re.match(r"(dev|proc|sys)/", info.name):
        return None
    info.uname = info.gname = ""
    return info


def python_rootfs() -> Path:
    """The Python image's root filesystem as a tar in the cache (python-bookworm-<N>.tar), made with
    debootstrap when missing (a few minutes; needs root and the Debian mirror). Call under build_lock."""
    tar_path = cache_dir() / f"python-{DEBIAN_SUITE}-{PYTHON_VERSION}.tar"
    if tar_path.exists():
        return tar_path
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache_dir()))
    try:
        root = work / "root"
        started = time.monotonic()
        _debootstrap(root)
        logger.info("debootstrap %s: %.0fs", DEBIAN_SUITE, time.monotonic() - started)
        _like_official_python(root)
        started = time.monotonic()
        partial = work / "rootfs.tar"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for child in sorted(root.iterdir()):
                tar.add(child, arcname=child.name, filter=_tar_member)
        os.replace(partial, tar_path)
        logger.info("%s written: %.0fs", tar_path, time.monotonic() - started)
    finally:
        _remove_tree(work)
    return tar_path


def _image_id(runtime: str, ref: str) -> str | None:
    done = subprocess.run(
        [runtime, "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else None


def python_image(runtime: str = "podman") -> str:
    """A Debian bookworm image with python3, pip and venv (python, pip on PATH; pip installs system-wide),
    also tagged docker.io/library/python:3.7-slim so that `FROM python:3.7-slim` builds against it with no
    registry. Imported from the cached root filesystem when missing, which is built first if need be;
    returns its reference."""
    _require(runtime)
    wanted = _image_id(runtime, PYTHON_IMAGE)
    if wanted is not None and all(_image_id(runtime, alias) == wanted for alias in PYTHON_ALIASES):
        return PYTHON_IMAGE
    with build_lock("python"):
        if _image_id(runtime, PYTHON_IMAGE) is None:
            tar = python_rootfs()
            started = time.monotonic()
            changes = [f"ENV {PATH_ENV}", "ENV LANG=C.UTF-8", f"CMD {_json_argv('python3')}"]
            _import(runtime, tar, PYTHON_IMAGE, changes)
            logger.info("%s imported: %.0fs", PYTHON_IMAGE, time.monotonic() - started)
        wanted = _image_id(runtime, PYTHON_IMAGE)
        for alias in PYTHON_ALIASES:
            if _image_id(runtime, alias) != wanted:
                _call([runtime, "tag", PYTHON_IMAGE, alias])
    return PYTHON_IMAGE


# --- Dockerfiles --------------------------------------------------------------------------------------------

BASES: Final[dict[str, Callable[[str], str]]] = {
    "python:3.7-slim": python_image,
    "library/python:3.7-slim": python_image,
    "docker.io/library/python:3.7-slim": python_image,
    PYTHON_IMAGE: python_image,
    BUSYBOX_IMAGE: busybox_image,
}
"""The base images this module can make, by the name a Dockerfile's FROM gives them."""
CA_BUNDLE: Final = "/etc/ssl/certs/ca-certificates.crt"
"""Where Debian keeps the certificates it trusts (pip's too)."""


def _bases(context_dir: Path) -> list[str]:
    """The images the Dockerfile (or Containerfile) in `context_dir` builds FROM."""
    for name in ("Dockerfile", "Containerfile"):
        dockerfile = context_dir / name
        if dockerfile.is_file():
            return re.findall(r"(?im)^\s*FROM\s+(?:--\S+\s+)*(\S+)", dockerfile.read_text())
    return []


def _host_ca_bundle() -> Path | None:
    for candidate in (os.environ.get("SSL_CERT_FILE"), ssl.get_default_verify_paths().cafile, CA_BUNDLE):
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


def build_image(runtime: str, context_dir: Path | str, tag: str, *, timeout: float = 1800) -> str:
    """`RUNTIME build -t TAG CONTEXT_DIR` with no registry: the bases in BASES that the Dockerfile names are
    made first, and podman never pulls. With podman, a build FROM the Python image trusts the certificates
    the host trusts (its RUN steps see the host's CA bundle), so that `pip install` works behind a
    TLS-inspecting proxy too. Returns `tag`; ContainerError with the build's output on failure."""
    context = Path(context_dir)
    makers = list(dict.fromkeys(BASES[base] for base in _bases(context) if base in BASES))
    for make in makers:
        make(runtime)
    options: list[str] = []
    if is_podman(runtime):
        host_ca = _host_ca_bundle()
        if python_image in makers and host_ca is not None:
            options += ["--volume", f"{host_ca}:{CA_BUNDLE}:ro"]
        options.append("--pull=never")
    started = time.monotonic()
    _call(
        [*runtime_argv(runtime), "build", *run_flags(runtime), *options, "-t", tag, str(context)],
        timeout=timeout,
    )
    logger.info("%s built: %.0fs", tag, time.monotonic() - started)
    return tag
