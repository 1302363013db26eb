"""A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver and kube-controller-manager
(built by `build-control-plane.sh`), certificates made here, every process's output in a log file.

There is no kubelet and no scheduler: `tests.kube.nodeagent` registers the node, binds pods and runs them.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import ipaddress
import json
import logging
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.fakes.process import free_ports

log = logging.getLogger(__name__)

BUILD_SCRIPT: Final = Path(__file__).with_name("build-control-plane.sh")
BINARIES: Final = ("etcd", "kube-apiserver", "kube-controller-manager")
BIN_ENV: Final = "SERVING_KUBE_BIN"
"""A directory holding prebuilt binaries; when set, the build script is not run."""
BUILD_TIMEOUT: Final = 3600.0
"""Seconds a cold build (Kubernetes from source on a small machine) may take; a cached one returns at once."""
START_TIMEOUT: Final = 60.0
"""Seconds from the first process started to a control plane that creates ServiceAccounts."""
STOP_TIMEOUT: Final = 10.0
"""Seconds a process gets between SIGTERM and SIGKILL."""
SERVICE_CIDR: Final = "10.96.0.0/16"
KUBERNETES_SERVICE_IP: Final = "10.96.0.1"
"""The service range's first address: the `kubernetes` Service's cluster IP, named in the serving cert."""
SA_ISSUER: Final = "https://kubernetes.default.svc.cluster.local"
CONTROLLERS: Final = (
    "deployment-controller",
    "replicaset-controller",
    "endpointslice-controller",
    "endpoints-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "statefulset-controller",
    "cronjob-controller",
    "job-controller",
)
"""What a Deployment behind a Service needs, plus namespaces, service accounts, aggregated ClusterRoles and
the StatefulSets, CronJobs and Jobs a SinkBinding may bind; node lifecycle (which would taint and evict) is
not among them."""


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or stopped; the message carries the log's tail."""


def build_control_plane(timeout: float = BUILD_TIMEOUT) -> Path:
    """The directory with etcd, kube-apiserver and kube-controller-manager: `$SERVING_KUBE_BIN`, or the
    build script's cache (built first if needed; a lock keeps two test runs from building at once)."""
    override = os.environ.get(BIN_ENV)
    if override:
        return _checked_bin_dir(Path(override), f"${BIN_ENV}")
    cache = Path(os.environ.get("SERVING_KUBE_CACHE", Path.home() / ".cache/serving/kube"))
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            done = subprocess.run(
                ["bash", str(BUILD_SCRIPT)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ControlPlaneError(f"{BUILD_SCRIPT.name} did not finish within {timeout:g}s") from exc
    if done.returncode != 0:
        raise ControlPlaneError(
            f"{BUILD_SCRIPT.name} exited with {done.returncode}:\n{_last_lines(done.stderr, 60)}"
        )
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise ControlPlaneError(f"{BUILD_SCRIPT.name} printed no directory:\n{_last_lines(done.stderr, 60)}")
    return _checked_bin_dir(Path(lines[-1]), BUILD_SCRIPT.name)


def _checked_bin_dir(path: Path, source: str) -> Path:
    missing = [b for b in BINARIES if not os.access(path / b, os.X_OK)]
    if missing:
        raise ControlPlaneError(f"{source} gave {path}, which lacks {', '.join(missing)}")
    return path


def _last_lines(text: str, count: int) -> str:
    return "\n".join(text.splitlines()[-count:])


# --- certificates -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    usage: list[x509.ObjectIdentifier] | None = None,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> x509.Certificate:
    """A certificate for `key` signed by `issuer` (self-signed CA when None), valid for a day."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if dns or ips:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


@dataclass(frozen=True, slots=True)
class Pki:
    """Every credential the control plane uses, written under one directory."""

    ca: KeyPair
    serving: KeyPair
    admin: KeyPair
    controller_manager: KeyPair
    sa_key: Path
    sa_pub: Path

    @classmethod
    def create(cls, folder: Path) -> Pki:
        """A CA, the apiserver's serving cert, client certs for the admin (`system:masters`) and the
        controller-manager, and the service-account signing key pair (ECDSA P-256: fast to make)."""
        folder.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "serving-test-ca")])
        ca_cert = _issue(ca_name, ca_key, None)
        ca = _write(folder, "ca", ca_cert, ca_key)

        def leaf(name: str, cn: str, org: str | None, usage: x509.ObjectIdentifier, **sans: Any) -> KeyPair:
            attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
            if org:
                attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _issue(x509.Name(attrs), key, (ca_cert, ca_key), usage=[usage], **sans)
            return _write(folder, name, cert, key)

        serving = leaf(
            "apiserver",
            "kube-apiserver",
            None,
            ExtendedKeyUsageOID.SERVER_AUTH,
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", KUBERNETES_SERVICE_IP),
        )
        admin = leaf("admin", "admin", "system:masters", ExtendedKeyUsageOID.CLIENT_AUTH)
        kcm = leaf(
            "controller-manager", "system:kube-controller-manager", None, ExtendedKeyUsageOID.CLIENT_AUTH
        )
        sa = ec.generate_private_key(ec.SECP256R1())
        (folder / "sa.key").write_bytes(_pem_key(sa))
        (folder / "sa.pub").write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return cls(ca, serving, admin, kcm, folder / "sa.key", folder / "sa.pub")


def _write(folder: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> KeyPair:
    pair = KeyPair(folder / f"{name}.crt", folder / f"{name}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(_pem_key(key))
    pair.key.chmod(0o600)
    return pair


def write_kubeconfig(path: Path, server: str, ca: Path, client: KeyPair, user: str) -> Path:
    """A kubeconfig with everything inline (JSON is YAML, so every client reads it)."""

    def b64(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(client.cert), "client-key-data": b64(client.key)},
            }
        ],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
        "current-context": "test",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


# --- processes ----------------------------------------------------------------------------------------------


class _Process:
    """One control-plane binary in its own session (so a stop reaches its children), output to a log."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            out.write(f"--- {time.strftime('%H:%M:%S')} starting {self.name}\n".encode())
            out.flush()
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def exit_code(self) -> int | None:
        """None while running (or never started)."""
        return None if self._popen is None else self._popen.poll()

    def tail(self, count: int = 40) -> str:
        try:
            return _last_lines(self.log_path.read_text(errors="replace"), count)
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the process group, SIGKILL it after `timeout`; returns once the process is reaped."""
        popen, self._popen = self._popen, None
        if popen is None:
            return
        self._signal_group(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %gs: SIGKILL", self.name, timeout)
            popen.kill()
            popen.wait(timeout)
        # Anything it left in its group (none of these binaries fork, but be sure).
        self._signal_group(popen.pid, signal.SIGKILL)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


# --- the control plane --------------------------------------------------------------------------------------


class ControlPlane:
    """etcd, kube-apiserver and kube-controller-manager on 127.0.0.1 with free ports, state under `workdir`.

    `start()` returns once the apiserver is ready and the controller-manager has created the `default`
    ServiceAccount (so pods can be admitted); `stop()` ends them in reverse order. Not thread-safe: one owner.
    """

    def __init__(self, workdir: Path, bin_dir: Path, *, start_timeout: float = START_TIMEOUT) -> None:
        self.workdir = workdir
        self.bin_dir = bin_dir
        self.start_timeout = start_timeout
        self.log_dir = workdir / "logs"
        self.etcd_port, self.etcd_peer_port, self.apiserver_port, self.kcm_port = free_ports(4)
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.pki: Pki | None = None
        self._etcd: _Process | None = None
        self._apiserver: _Process | None = None
        self._kcm: _Process | None = None
        self._admin_ssl: ssl.SSLContext | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start all three and wait until they work, or stop what started and raise `ControlPlaneError`."""
        deadline = time.monotonic() + self.start_timeout
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.pki = pki = Pki.create(self.workdir / "pki")
            write_kubeconfig(self.kubeconfig, self.server, pki.ca.cert, pki.admin, "admin")
            kcm_config = write_kubeconfig(
                self.workdir / "controller-manager.kubeconfig",
                self.server,
                pki.ca.cert,
                pki.controller_manager,
                "system:kube-controller-manager",
            )
            self._admin_ssl = ssl.create_default_context(cafile=str(pki.ca.cert))
            self._admin_ssl.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))

            self._etcd = self._spawn("etcd", self._etcd_args())
            self._wait(self._etcd, "healthy", deadline, self._etcd_healthy)
            self._apiserver = self._spawn("kube-apiserver", self._apiserver_args(pki))
            self._wait(self._apiserver, "ready", deadline, self._apiserver_ready)
            self._kcm = self._spawn("kube-controller-manager", self._kcm_args(pki, kcm_config))
            self._wait(self._kcm, "creating ServiceAccounts", deadline, self._default_service_account)
        except BaseException:
            self.stop()
            raise
        log.info("control plane up at %s (logs in %s)", self.server, self.log_dir)

    def stop(self) -> None:
        """Controller-manager, apiserver, etcd: each SIGTERM, then SIGKILL after a bound. Idempotent."""
        for proc in (self._kcm, self._apiserver, self._etcd):
            if proc is not None:
                proc.stop()

    def restart_apiserver(self) -> None:
        """Stop the apiserver (cutting every watch) and start it again on the same port and etcd."""
        if self._apiserver is None or self.pki is None:
            raise ControlPlaneError("the control plane is not running")
        self._apiserver.stop()
        self._apiserver = self._spawn("kube-apiserver", self._apiserver_args(self.pki))
        deadline = time.monotonic() + self.start_timeout
        self._wait(self._apiserver, "ready after restart", deadline, self._apiserver_ready)

    def log_tails(self, count: int = 30) -> str:
        """The last lines of every process's log, for a failure message."""
        procs = [p for p in (self._etcd, self._apiserver, self._kcm) if p is not None]
        return "\n".join(f"--- {p.name} ({p.log_path}):\n{p.tail(count)}" for p in procs)

    def get(self, path: str, timeout: float = 5.0) -> dict[str, Any]:
        """GET an API path as the admin (blocking); raises `urllib.error.HTTPError` on a non-2xx answer."""
        with urllib.request.urlopen(self.server + path, timeout=timeout, context=self._admin_ssl) as resp:
            data: dict[str, Any] = json.load(resp)
            return data

    # --- arguments ---

    def _spawn(self, name: str, args: list[str]) -> _Process:
        proc = _Process(name, [str(self.bin_dir / name), *args], self.log_dir / f"{name}.log")
        proc.start()
        return proc

    def _etcd_args(self) -> list[str]:
        client = self.etcd_url
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        return [
            "--name=test",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=test={peer}",
            "--initial-cluster-state=new",
            # A test cluster's data is thrown away: no fsync makes every write much faster.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def _apiserver_args(self, pki: Pki) -> list[str]:
        return [
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            f"--tls-cert-file={pki.serving.cert}",
            f"--tls-private-key-file={pki.serving.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # 127.0.0.1 may not be an Endpoints address, and no pod could reach it anyway.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
            # On SIGTERM, end open watches (clients relist elsewhere) instead of waiting for them to finish:
            # otherwise a stop waits out the SIGKILL bound whenever a client watches over HTTP/1.1.
            "--shutdown-watch-termination-grace-period=2s",
        ]

    def _kcm_args(self, pki: Pki, kubeconfig: Path) -> list[str]:
        return [
            f"--kubeconfig={kubeconfig}",
            "--leader-elect=false",
            f"--controllers={','.join(CONTROLLERS)}",
            # Each controller acts as its own ServiceAccount, with the bootstrap RBAC roles (as kubeadm does).
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca.cert}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.kcm_port}",
            f"--cert-dir={self.workdir / 'controller-manager'}",
            "--profiling=false",
        ]

    # --- readiness ---

    def _wait(self, proc: _Process, what: str, deadline: float, check: Callable[[], bool]) -> None:
        """Poll `check` until true; raise with the log's tail when the process exits or time runs out."""
        while True:
            code = proc.exit_code()
            if code is not None:
                raise ControlPlaneError(
                    f"{proc.name} exited with {code} before {what}; last lines of {proc.log_path}:\n"
                    f"{proc.tail()}"
                )
            with contextlib.suppress(OSError, ssl.SSLError, ValueError):
                if check():
                    return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{proc.name} not {what} within {self.start_timeout:g}s; last lines of {proc.log_path}:\n"
                    f"{proc.tail()}"
                )
            time.sleep(0.2)

    def _etcd_healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as resp:
            return bool(json.load(resp).get("health") == "true")

    def _apiserver_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.server}/readyz", timeout=2, context=self._admin_ssl) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError:
            return False

    def _default_service_account(self) -> bool:
        try:
            self.get("/api/v1/namespaces/default/serviceaccounts/default", timeout=2)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise
        return True


@contextlib.contextmanager
def running_control_plane(workdir: Path, bin_dir: Path | None = None) -> Iterator[ControlPlane]:
    """Build (or reuse) the binaries, start the control plane in `workdir`, stop it on exit."""
    with ControlPlane(workdir, bin_dir or build_control_plane()) as plane:
        yield plane
