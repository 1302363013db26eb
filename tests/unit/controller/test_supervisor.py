from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import aiohttp
import pytest

from controller.local.platformserver import PlatformServer
from controller.local.runtime.backoff import BackoffPolicy
from controller.local.runtime.pod import LocalPod, PodPorts, PodProcesses, PodSettings, duration
from controller.local.runtime.port import PortAllocator
from controller.local.runtime.process import ProcessSpec
from controller.local.runtime.rotation import RotationPolicy, rotated
from controller.local.runtime.supervisor import RevisionSpec, Supervisor
from controller.local.store import Store
from serving.platform import Revision, RevisionKey
from serving.platformclient import HttpPlatform, PlatformError
from tests.unit.controller.fakeprocess import POD_ENV, FakeLauncher

KEY = RevisionKey("default", "hello-00001")
SETTINGS = PodSettings(
    probe_interval=0.002,
    ready_probe_interval=0.005,
    orphan_grace=0.05,
    min_user_grace=0.05,
    backoff=BackoffPolicy(base=0.03, cap=0.04, reset_after=10.0),
)


def spec(tmp_path: Path, initial_scale: int = 1, grace: float = 1.0) -> RevisionSpec:
    def processes(name: str, ports: PodPorts) -> PodProcesses:
        env = {POD_ENV: name, "QUEUE_SERVING_PORT": str(ports.serving)}
        return PodProcesses(
            queue_proxy=ProcessSpec(argv=("queue-proxy",), env=env, cwd=tmp_path, log_path=tmp_path / "qp"),
            user=lambda: ProcessSpec(argv=("user",), env=env, cwd=tmp_path, log_path=tmp_path / "user.log"),
            user_log=tmp_path / "user.log",
        )

    return RevisionSpec(
        revision=Revision(key=KEY, service="hello", configuration="hello"),
        initial_scale=initial_scale,
        grace=grace,
        processes=processes,
    )


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


class Rig:
    def __init__(self, launcher: FakeLauncher, settings: PodSettings = SETTINGS) -> None:
        self.store = Store()
        self.launcher = launcher
        self.supervisor = Supervisor(
            self.store, launcher, launcher.probe, PortAllocator(low=23000, high=24000), settings
        )
        self.task: asyncio.Task[None] | None = None

    def ready_pods(self) -> list[str]:
        rev = self.store.revision(KEY)
        return [] if rev is None else [p.name for p in rev.pods if p.ready]

    def published(self) -> list[str]:
        rev = self.store.revision(KEY)
        return [] if rev is None else [p.name for p in rev.pods]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    launcher = FakeLauncher()
    result = Rig(launcher)
    result.task = asyncio.create_task(result.supervisor.run())
    yield result
    await result.supervisor.shutdown(0.2)
    result.task.cancel()
    await asyncio.gather(result.task, return_exceptions=True)
    assert launcher.alive("queue-proxy") == []
    assert launcher.alive("user") == []


async def test_initial_scale_starts_ready_pods_with_distinct_ports(rig: Rig, tmp_path: Path) -> None:
    rig.supervisor.add(spec(tmp_path, initial_scale=2))
    await eventually(lambda: len(rig.ready_pods()) == 2)
    pods = rig.store.revision(KEY).pods  # type: ignore[union-attr]  # the revision exists
    assert len({p.port for p in pods} | {p.stats_port for p in pods} | {p.admin_port for p in pods}) == 6
    assert all(p.name.startswith("hello-00001-") for p in pods)
    assert len(rig.launcher.alive("user")) == 2


async def test_scale_in_drains_queue_proxy_before_stopping_the_app(rig: Rig, tmp_path: Path) -> None:
    rig.supervisor.add(spec(tmp_path, initial_scale=2))
    await eventually(lambda: len(rig.ready_pods()) == 2)
    first, second = rig.ready_pods()
    assert rig.supervisor.scale(KEY, 1, [first])
    await eventually(lambda: rig.published() == [second])
    await eventually(lambda: rig.launcher.alive("user", first) == [])
    events = rig.launcher.events
    assert events.index(("queue-proxy", "SIGTERM")) < events.index(("queue-proxy", "exit 0"))
    assert events.index(("queue-proxy", "exit 0")) < events.index(("user", "SIGTERM")), events
    assert rig.launcher.alive("user", second) != []


@pytest.mark.parametrize(
    ("named", "expect_removed"),
    [
        pytest.param(["$1"], "$1", id="named-pod-first"),
        pytest.param([], "$2", id="else-newest"),
        pytest.param(["unknown-pod"], "$2", id="unknown-name-ignored"),
    ],
)
async def test_scale_in_order(rig: Rig, tmp_path: Path, named: list[str], expect_removed: str) -> None:
    rig.supervisor.add(spec(tmp_path, initial_scale=1))
    await eventually(lambda: len(rig.ready_pods()) == 1)
    rig.supervisor.scale(KEY, 3, [])
    await eventually(lambda: len(rig.ready_pods()) == 3)
    names = [p.name for p in rig.supervisor.pods(KEY)]
    alias = {"$0": names[0], "$1": names[1], "$2": names[2]}
    rig.supervisor.scale(KEY, 2, [alias.get(n, n) for n in named])
    removed = alias[expect_removed]
    await eventually(lambda: len(rig.published()) == 2)
    assert removed not in rig.published()


async def test_crashed_app_restarts_with_backoff_and_reports_crash_loop(rig: Rig, tmp_path: Path) -> None:
    rig.supervisor.add(spec(tmp_path))
    await eventually(lambda: len(rig.ready_pods()) == 1)
    [pod] = rig.supervisor.pods(KEY)
    rig.launcher.alive("user")[0].exit(3)
    await eventually(lambda: pod.restarts == 1 and len(rig.launcher.alive("user")) == 1)
    rig.launcher.alive("user")[0].exit(4)
    await eventually(lambda: pod.waiting is not None)
    assert pod.waiting is not None
    assert pod.waiting.startswith("CrashLoopBackOff")
    assert "exit code 4" in pod.waiting
    assert not pod.ready
    assert rig.ready_pods() == []
    await eventually(lambda: len(rig.ready_pods()) == 1)
    assert status_of(pod) == (None, 2)
    assert len(rig.launcher.alive("queue-proxy")) == 1, "the queue-proxy keeps running across app restarts"


async def test_app_that_cannot_start_is_retried_and_logged(rig: Rig, tmp_path: Path) -> None:
    rig.launcher.fail_user_start = True
    rig.supervisor.add(spec(tmp_path))
    [pod] = await _pods(rig)
    await eventually(lambda: pod.waiting is not None)
    assert "No such file or directory" in (tmp_path / "user.log").read_text()
    rig.launcher.fail_user_start = False
    await eventually(lambda: len(rig.ready_pods()) == 1)


async def test_dead_queue_proxy_replaces_the_pod(rig: Rig, tmp_path: Path) -> None:
    rig.supervisor.add(spec(tmp_path))
    await eventually(lambda: len(rig.ready_pods()) == 1)
    [old] = rig.ready_pods()
    rig.launcher.alive("queue-proxy")[0].exit(1)
    await eventually(lambda: len(rig.ready_pods()) == 1 and rig.ready_pods() != [old])
    assert rig.launcher.alive("user", old) == []


async def test_removed_revision_leaves_the_platform_and_stops_its_pods(rig: Rig, tmp_path: Path) -> None:
    rig.supervisor.add(spec(tmp_path, initial_scale=2))
    await eventually(lambda: len(rig.ready_pods()) == 2)
    rig.supervisor.remove(KEY)
    assert rig.store.revision(KEY) is None
    assert not rig.supervisor.scale(KEY, 1, [])
    await eventually(lambda: rig.launcher.alive("user") == [] and rig.launcher.alive("queue-proxy") == [])
    await eventually(lambda: rig.supervisor.keys() == [] and rig.supervisor.pod_count() == 0)


async def test_platform_api_watch_and_scale(rig: Rig, tmp_path: Path) -> None:
    from aiohttp import web

    rig.supervisor.add(spec(tmp_path, initial_scale=0))
    server = PlatformServer(rig.store, rig.supervisor)
    runner = web.AppRunner(server.app(), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:
            client = HttpPlatform(url, session)
            watch = client.watch()
            first = await asyncio.wait_for(anext(watch), 5)
            assert [(r.key, r.pods) for r in first.revisions] == [(KEY, ())]
            await client.scale(KEY, 1, [])
            while True:
                snap = await asyncio.wait_for(anext(watch), 5)
                if snap.revisions[0].pods and snap.revisions[0].pods[0].ready:
                    break
            await watch.aclose()
            with pytest.raises(PlatformError, match="404"):
                await client.scale(RevisionKey("default", "nope"), 1, [])
            async with session.post(f"{url}/v1/revisions/default/hello-00001/scale", json={"x": 1}) as resp:
                assert resp.status == 400
            async with session.put(f"{url}/v1/revisions/default/hello-00001/status", json={}) as resp:
                assert resp.status == 400
    finally:
        await runner.cleanup()


async def test_app_not_listening_on_its_port_is_the_reason_its_pod_is_not_ready(
    rig: Rig, tmp_path: Path
) -> None:
    rig.launcher.probe.app_listening = False
    rig.supervisor.add(spec(tmp_path))
    [pod] = await _pods(rig)
    assert pod.reason(time.monotonic()) is not None
    await eventually(lambda: "not listening" in (pod.reason(time.monotonic()) or ""))
    assert pod.reason(time.monotonic() + 42) == (
        f"user-container running for 42s but not listening on port {pod.ports.user}"
    )
    await asyncio.sleep(0.05)  # about 25 probes
    assert rig.launcher.probe.diagnoses == 1, "the app's port is checked at most once a second"
    assert rig.ready_pods() == []
    rig.launcher.probe.app_listening = True
    await eventually(lambda: rig.ready_pods() == [pod.name])
    assert pod.reason(time.monotonic()) is None


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        pytest.param(0.4, "0s", id="under-a-second"),
        pytest.param(42.9, "42s", id="seconds"),
        pytest.param(185, "3m5s", id="minutes"),
        pytest.param(7805, "2h10m", id="hours"),
    ],
)
def test_duration_as_kubectl_shows_ages(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


async def test_replacement_held_back_after_pods_failed_says_why(tmp_path: Path) -> None:
    slow = PodSettings(
        probe_interval=0.002, backoff=BackoffPolicy(base=5.0, cap=5.0, reset_after=10.0), orphan_grace=0.05
    )
    rig = Rig(FakeLauncher(), slow)
    task = asyncio.create_task(rig.supervisor.run())
    try:
        rig.supervisor.add(spec(tmp_path))
        for _ in range(2):  # the first failed pod is replaced at once, the second after 5 s
            await eventually(lambda: len(rig.ready_pods()) == 1)
            [name] = rig.ready_pods()
            assert rig.supervisor.reasons(KEY, time.monotonic()) == []
            rig.launcher.alive("queue-proxy")[0].exit(1)
            await eventually(partial(gone, rig, name))
        assert rig.supervisor.reasons(KEY, time.monotonic()) == [
            f"pod {name} ended: queue-proxy exit code 1; next pod in 5s"
        ]
        assert rig.supervisor.reasons(KEY, time.monotonic() + 5) == []
    finally:
        await rig.supervisor.shutdown(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_logs_of_both_containers_are_rotated_past_the_size_limit(tmp_path: Path) -> None:
    policy = RotationPolicy(max_bytes=1024, max_files=2, interval=0.005)
    rig = Rig(FakeLauncher(), dataclasses.replace(SETTINGS, log_rotation=policy))
    task = asyncio.create_task(rig.supervisor.run())
    try:
        rig.supervisor.add(spec(tmp_path))
        await eventually(lambda: len(rig.ready_pods()) == 1)
        [pod] = rig.supervisor.pods(KEY)
        assert pod.log_paths == (tmp_path / "user.log", tmp_path / "qp")
        for log in pod.log_paths:
            with log.open("a") as out:
                out.write("x" * 2000 + "\n")
        await eventually(lambda: all(rotated(log, 1).exists() for log in pod.log_paths))
        for log in pod.log_paths:
            assert log.stat().st_size == 0
            assert rotated(log, 1).read_text() == "x" * 2000 + "\n"
    finally:
        await rig.supervisor.shutdown(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def gone(rig: Rig, name: str) -> bool:
    return name not in [p.name for p in rig.supervisor.pods(KEY)]


def status_of(pod: LocalPod) -> tuple[str | None, int]:
    return pod.waiting, pod.restarts


async def _pods(rig: Rig) -> list[LocalPod]:
    await eventually(lambda: rig.supervisor.pod_count() == 1)
    return list(rig.supervisor.pods(KEY))
