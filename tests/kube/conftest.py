"""Fixtures for tests against a real control plane: `kube_cluster` starts etcd, kube-apiserver,
kube-controller-manager and the test node agent once per session. Every test under tests/kube is marked `kube`
(deselect with `-m "not kube"`); a failing one gets the cluster's log tails in its report.

The binaries are built (or found in the cache) once collection is done, outside any test's timeout: a cold
build of Kubernetes takes many minutes, a cached one returns at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from serving.kube.api import Kube
from tests.fakes.process import processes_with_env
from tests.kube.cluster import ControlPlane, ControlPlaneError, build_control_plane
from tests.kube.nodeagent import NodeAgentConfig, NodeAgentThread, pod_log_dir
from tests.kube.platform import Platform

KUBE_DIR = Path(__file__).resolve().parent
MARKER_ENV = "SERVING_KUBE_TEST_MARKER"
"""Every container process of the session carries this variable, so the teardown can prove none is left."""
NODE_SLOTS = 16
"""How many test sessions may run a node agent on one machine at once."""


@dataclass
class KubeCluster:
    """The running cluster a test talks to."""

    plane: ControlPlane
    agent: NodeAgentThread
    node: NodeAgentConfig
    """The node's name, bridge, pod subnet and gateway (the node's InternalIP, the host as pods see it)."""
    marker: str

    @property
    def kubeconfig(self) -> Path:
        """An admin kubeconfig (client certificate in `system:masters`)."""
        return self.plane.kubeconfig

    @property
    def server(self) -> str:
        """The apiserver's URL, https://127.0.0.1:<port>."""
        return self.plane.server

    @property
    def log_dir(self) -> Path:
        """etcd.log, kube-apiserver.log, kube-controller-manager.log and nodeagent.log."""
        return self.plane.log_dir

    @property
    def pod_log_dir(self) -> Path:
        """Container output: `<namespace>_<pod>_<uid[:8]>/<container>.log`."""
        return self.node.log_dir

    @contextlib.asynccontextmanager
    async def api_client(self) -> AsyncIterator[Any]:
        """A kubernetes_asyncio `ApiClient` on the running loop, closed on exit."""
        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        async with client.ApiClient(configuration) as api:
            yield api

    def restart_apiserver(self) -> None:
        """Stop and start the apiserver (same port, same etcd), cutting every watch; blocks until it is ready
        again (a few seconds): from async code, `await asyncio.to_thread(kube_cluster.restart_apiserver)`."""
        self.plane.restart_apiserver()

    def container_log(self, namespace: str, pod: str, container: str, uid: str = "") -> str:
        """What a container wrote so far (all its restarts), "" when it never started."""
        if uid:
            paths = [pod_log_dir(self.pod_log_dir, namespace, pod, uid) / f"{container}.log"]
        else:
            paths = sorted(self.pod_log_dir.glob(f"{namespace}_{pod}_*/{container}.log"))
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def logs(self, lines: int = 25) -> str:
        """Tails of the control plane's, the agent's and the most recent containers' logs."""
        parts = [self.plane.log_tails(lines)]
        agent_log = self.log_dir / "nodeagent.log"
        if agent_log.exists():
            parts.append(f"--- node agent ({agent_log}):\n" + _tail(agent_log, lines * 2))
        recent = sorted(self.pod_log_dir.glob("*/*.log"), key=lambda p: p.stat().st_mtime)[-8:]
        parts += [f"--- {p.relative_to(self.pod_log_dir)}:\n{_tail(p, 10)}" for p in recent]
        return "\n".join(parts)


def _tail(path: Path, lines: int) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def marked_processes(marker: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose environment carries MARKER_ENV=`marker`."""
    return processes_with_env(MARKER_ENV, marker)


@contextlib.contextmanager
def node_slot() -> Iterator[int]:
    """A machine-wide slot for this session's pod network, held by a file lock until exit: concurrent
    sessions get distinct bridges, subnets and namespace names, and a slot's leftovers (from a session that
    crashed) are cleaned up only by the next holder of that slot."""
    for slot in range(NODE_SLOTS):
        lock = (Path(tempfile.gettempdir()) / f"serving-kube-node-{slot}.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        with lock:
            yield slot
        return
    raise RuntimeError(f"all {NODE_SLOTS} node slots are taken by other test sessions")


# --- collection ---------------------------------------------------------------------------------------------

_build: dict[str, Path | Exception] = {}
_cluster: list[KubeCluster] = []


def _is_kube(item: pytest.Item) -> bool:
    return KUBE_DIR in Path(str(item.path)).resolve().parents


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test here `kube` before `-m` deselects."""
    for item in items:
        if _is_kube(item):
            item.add_marker(pytest.mark.kube)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the control plane now (not inside the first test's timeout) when a kube test will run."""
    if session.config.option.collectonly or not any(_is_kube(item) for item in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("kube: building or reusing the control plane (a cold build takes many minutes)")
    started = time.monotonic()
    try:
        _build["bin"] = build_control_plane()
    except ControlPlaneError as exc:
        _build["error"] = exc
    if reporter is not None and "bin" in _build:
        reporter.write_line(f"kube: binaries in {_build['bin']} ({time.monotonic() - started:.0f}s)")


# --- fixtures -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """The test modules' log records (the node agent's above all) also go to `path`, at INFO."""
    logger = logging.getLogger("tests.kube")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """etcd, kube-apiserver, kube-controller-manager and the node agent (its own thread and loop), up for
    the session; at the end the agent stops every pod and removes the pod network, the control plane stops,
    and no container process may be left."""
    error = _build.get("error")
    if isinstance(error, Exception):
        pytest.fail(f"the control plane could not be built: {error}", pytrace=False)
    built = _build.get("bin")
    bin_dir = built if isinstance(built, Path) else build_control_plane()
    workdir = tmp_path_factory.mktemp("kube")
    marker = uuid.uuid4().hex
    with contextlib.ExitStack() as stack:
        plane = ControlPlane(workdir, bin_dir)
        # etcd's data (64 MB of preallocated WAL) goes after the plane stops; the logs stay for a post-mortem.
        stack.callback(shutil.rmtree, workdir / "etcd", ignore_errors=True)
        plane.start()
        stack.callback(plane.stop)
        stack.enter_context(_log_to(plane.log_dir / "nodeagent.log"))
        slot = stack.enter_context(node_slot())
        node = NodeAgentConfig(
            log_dir=workdir / "pods",
            bridge=f"svbr{slot}",
            subnet=f"10.244.{slot}.0/24",
            prefix=f"svk{slot}",
            # The venv's bin first: a container `command: ["serving", ...]` runs this checkout's CLI.
            path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)]),
            env={MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"},
            restart_backoff=0.5,
            restart_backoff_max=5.0,
        )
        agent = NodeAgentThread(node, plane.kubeconfig)
        agent.start()
        stack.callback(agent.stop)
        _cluster.append(KubeCluster(plane, agent, node, marker))
        stack.callback(_cluster.clear)
        yield _cluster[0]
    left = marked_processes(marker)
    assert not left, f"container processes outlived the node agent: {left}"


@pytest.fixture(autouse=True)
def _node_agent_alive(request: pytest.FixtureRequest) -> Generator[None]:
    """A test that used the cluster fails if the node agent died meanwhile (its error is the cause)."""
    yield
    if "kube_cluster" in request.fixturenames and _cluster and not _cluster[0].agent.alive:
        raise AssertionError("the node agent stopped during the test") from _cluster[0].agent.error


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed and _cluster and _is_kube(item):
        report.sections.append(("kube cluster logs", _cluster[0].logs()))


@pytest.fixture
async def kube(platform: Platform) -> AsyncIterator[Kube]:
    """An admin client of the cluster the module's `platform` fixture runs on."""
    admin = await Kube.connect(str(platform.kubeconfig))
    try:
        yield admin
    finally:
        await admin.close()
