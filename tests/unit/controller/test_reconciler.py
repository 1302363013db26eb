from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from controller.local.runtime.backoff import BackoffPolicy
from controller.local.runtime.pod import PodSettings
from controller.local.runtime.port import PortAllocator
from controller.local.runtime.revisions import LocalRuntime, LocalSettings
from controller.local.runtime.supervisor import Supervisor
from controller.local.store import Store
from controller.reconcile.reconciler import ApplyError, Reconciler, ReconcilerSettings, apply_problems
from controller.reconcile.routetable import RouteTable
from serving.platform import RevisionKey
from serving.service import Service, parse_documents
from tests.unit.controller.fakeprocess import FakeLauncher

SETTINGS = PodSettings(probe_interval=0.002, ready_probe_interval=0.005, backoff=BackoffPolicy(base=0.01))


def service(tmp_path: Path, target: str, *, traffic: str = "", annotations: str = "") -> Service:
    text = f"""
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    metadata:
      annotations: {{{annotations}}}
    spec:
      containers:
        - image: example/hello
          command: ["python3", "app.py"]
          env:
            - name: TARGET
              value: {target}
{traffic}"""
    [parsed] = parse_documents(text, tmp_path / "hello.yaml")
    return parsed


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.store = Store()
        self.launcher = FakeLauncher()
        self.supervisor = Supervisor(
            self.store, self.launcher, self.launcher.probe, PortAllocator(low=24000, high=25000), SETTINGS
        )
        self.tables: list[RouteTable] = []
        runtime = LocalRuntime(self.store, self.supervisor, LocalSettings(log_dir=tmp_path / "logs"))
        self.reconciler = Reconciler(runtime, ReconcilerSettings(), self.tables.append)
        self.reports: list[str] = []

    def route(self, host: str = "hello.default.localhost") -> list[tuple[str, int]]:
        route = self.tables[-1].lookup(host)
        assert route is not None
        return [(s.revision.name, s.percent) for s in route.splits]

    async def settle(self, check: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not check():
            assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
            await asyncio.sleep(0.002)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    result = Rig(tmp_path)
    tasks = [
        asyncio.create_task(result.supervisor.run()),
        asyncio.create_task(result.reconciler.run(result.reports.extend)),
    ]
    yield result
    await result.supervisor.shutdown(0.2)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_first_revision_gets_traffic_before_it_is_ready(rig: Rig, tmp_path: Path) -> None:
    changes = rig.reconciler.apply([service(tmp_path, "v1")])
    assert changes == [
        "Service default/hello created",
        "Revision default/hello-00001 created",
        "Route default/hello: hello-00001 100%",
    ]
    assert rig.route() == [("hello-00001", 100)]
    assert rig.supervisor.desired(RevisionKey("default", "hello-00001")) == 1


async def test_new_revision_takes_traffic_once_ready(rig: Rig, tmp_path: Path) -> None:
    rig.reconciler.apply([service(tmp_path, "v1")])
    await rig.settle(lambda: "Revision default/hello-00001 is ready" in rig.reports)
    rig.launcher.fail_user_start = True  # the new revision's app cannot start yet
    changes = rig.reconciler.apply([service(tmp_path, "v2")])
    assert changes == ["Revision default/hello-00002 created"]
    assert rig.route() == [("hello-00001", 100)]
    await asyncio.sleep(0.05)
    assert rig.route() == [("hello-00001", 100)], "traffic moved to a revision that is not ready"
    rig.launcher.fail_user_start = False
    await rig.settle(lambda: rig.route() == [("hello-00002", 100)])
    assert "Route default/hello: hello-00002 100%" in rig.reports
    assert rig.reconciler.apply([service(tmp_path, "v2")]) == []


async def test_invalid_edit_changes_nothing(rig: Rig, tmp_path: Path) -> None:
    rig.reconciler.apply([service(tmp_path, "v1")])
    bad = service(tmp_path, "v2", traffic="  traffic:\n    - revisionName: hello-00007\n      percent: 100\n")
    with pytest.raises(ApplyError, match="hello-00007"):
        rig.reconciler.apply([bad])
    [state] = rig.reconciler.services
    assert list(state.configuration.revisions) == ["hello-00001"]
    assert rig.store.revision(RevisionKey("default", "hello-00002")) is None
    assert rig.route() == [("hello-00001", 100)]


async def test_tags_split_and_initial_scale(rig: Rig, tmp_path: Path) -> None:
    rig.reconciler.apply([service(tmp_path, "v1")])
    await rig.settle(lambda: "Revision default/hello-00001 is ready" in rig.reports)
    traffic = (
        "  traffic:\n    - revisionName: hello-00001\n      percent: 70\n      tag: old\n"
        "    - latestRevision: true\n      percent: 30\n      tag: new\n"
    )
    scaled = service(
        tmp_path, "v2", traffic=traffic, annotations='"autoscaling.knative.dev/initial-scale": "3"'
    )
    rig.reconciler.apply([scaled])
    assert rig.supervisor.desired(RevisionKey("default", "hello-00002")) == 3
    # hello-00002 is not ready: latestRevision still resolves to hello-00001.
    assert rig.route() == [("hello-00001", 100)]
    await rig.settle(lambda: rig.route() == [("hello-00001", 70), ("hello-00002", 30)])
    assert rig.route("old-hello.default.localhost") == [("hello-00001", 100)]
    assert rig.route("new-hello.default.localhost") == [("hello-00002", 100)]


async def test_removed_service_takes_its_revisions_away(rig: Rig, tmp_path: Path) -> None:
    rig.reconciler.apply([service(tmp_path, "v1")])
    await rig.settle(lambda: len(rig.launcher.alive("user")) == 1)
    assert rig.reconciler.apply([]) == ["Service default/hello deleted with its revisions"]
    assert rig.store.revisions() == []
    assert rig.tables[-1].hosts() == []
    await rig.settle(lambda: rig.launcher.alive("user") == [] and rig.launcher.alive("queue-proxy") == [])


@pytest.mark.parametrize(
    ("traffic", "problem"),
    [
        pytest.param(
            "  traffic:\n    - revisionName: nope\n      percent: 100\n",
            "spec.traffic[0].revisionName: revision 'nope' does not exist in Service default/hello "
            "(revisions: hello-00001)",
            id="unknown-revision",
        ),
        pytest.param(
            "  traffic:\n    - latestRevision: true\n      percent: 50\n"
            "    - revisionName: hello-00002\n      percent: 50\n",
            "spec.traffic[1].revisionName: revision 'hello-00002' does not exist",
            id="future-revision",
        ),
        pytest.param("  traffic:\n    - revisionName: hello-00001\n      percent: 100\n", None, id="first"),
        pytest.param("", None, id="latest"),
    ],
)
def test_apply_problems_at_start_up_name_file_and_traffic_entry(
    tmp_path: Path, traffic: str, problem: str | None
) -> None:
    """`serving up` checks these before starting anything: at start-up only the template's revision exists."""
    problems = apply_problems([service(tmp_path, "v1", traffic=traffic)])

    if problem is None:
        assert problems == []
    else:
        [line] = problems
        assert line.startswith(f"{tmp_path / 'hello.yaml'}: document 1 (Service/hello): {problem}")
