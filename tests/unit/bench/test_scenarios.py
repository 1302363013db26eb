from __future__ import annotations

import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.context import Context
from bench.load.sample import Sample
from bench.preset import ParamError, load_preset, merge
from bench.scenarios import coldstart, dataplane, loadtest, realtraffic, rollout
from bench.scenarios.catalog import scenarios
from bench.scenarios.wake import PARTS, Wake
from bench.system import service
from bench.system.podwatch import pod_points
from bench.system.stack import all_ready, at_zero
from controller.local.runtime import container
from controller.local.runtime.container import ContainerRuntime
from controller.local.system import load_services

NAMES = ["dataplane-probe", "scale-from-zero", "load-test", "rollout-probe", "real-traffic"]
HELLOWORLD = Path(__file__).resolve().parents[3] / "examples" / "helloworld-python"
IMAGE = "localhost/example:1"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _ctx(name: str, session: aiohttp.ClientSession, tmp_path: Path, **overrides: Any) -> Context:
    params = merge(load_preset(name), overrides)
    return Context(scenario=name, params=params, out=tmp_path, command="test", session=session)


def test_every_scenario_has_a_preset_with_rate_and_duration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # presets ship inside the package: found from any working directory
    assert list(scenarios()) == NAMES
    for name in NAMES:
        preset = load_preset(name)
        assert preset["rate"] > 0
        assert preset["duration"] > 0


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param({"rate": 20.5}, {"rate": 20.5, "steps": [1, 2], "app": "x"}, id="float-for-int"),
        pytest.param({"steps": [3]}, {"rate": 10, "steps": [3], "app": "x"}, id="list"),
        pytest.param({"app": "y"}, {"rate": 10, "steps": [1, 2], "app": "y"}, id="string"),
    ],
)
def test_overrides_replace_preset_values(overrides: dict[str, Any], expected: dict[str, Any]) -> None:
    assert merge({"rate": 10, "steps": [1, 2], "app": "x"}, overrides) == expected


def test_bad_overrides_are_all_reported() -> None:
    with pytest.raises(ParamError) as exc:
        merge({"rate": 10, "steps": [1], "app": "x"}, {"rate": "fast", "steps": 3, "colour": "red"})
    assert sorted(exc.value.problems) == [
        "parameter 'rate' must be a number, not 'fast'",
        "parameter 'steps' must be a list, not 3",
        "unknown parameter 'colour' (known: app, rate, steps)",
    ]


def test_missing_preset_is_a_parameter_problem(tmp_path: Path) -> None:
    with pytest.raises(ParamError, match="cannot read the preset"):
        load_preset("nope", tmp_path)


async def test_every_scenario_writes_services_that_serving_up_accepts(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    docs: list[dict[str, Any]] = []
    dp = _ctx("dataplane-probe", session, tmp_path)
    docs += dataplane.documents(dataplane.app_kinds(dp))
    for app in ("helloworld", "benchapp"):
        sfz = _ctx("scale-from-zero", session, tmp_path, app=app, helloworld_dir=str(HELLOWORLD))
        docs += coldstart.documents(sfz, 3)
    docs += coldstart.documents(_ctx("scale-from-zero", session, tmp_path, app="image", image=IMAGE), 2)
    docs.append(loadtest.document(_ctx("load-test", session, tmp_path)))
    docs.append(rollout.document(_ctx("rollout-probe", session, tmp_path), "v2"))
    rt = _ctx("real-traffic", session, tmp_path)
    docs += realtraffic.documents(rt, random.Random(1), ["real-1", "real-2"])[0]
    # Names must be unique across one file for the check to see them all.
    for i, doc in enumerate(docs):
        doc["metadata"]["name"] = f"{doc['metadata']['name']}-{i}"
    path = service.write(tmp_path / "all.yaml", docs, "every Service the scenarios write")
    loaded = load_services([path])
    assert len(loaded) == len(docs)
    pinned = {s.name: s.template.annotations for s in loaded if s.name.startswith("probe-sleep-100ms-act")}
    assert list(pinned.values()) == [{service.MIN_SCALE: "1", service.TARGET_BURST_CAPACITY: "-1"}]


async def test_service_files_name_no_path_of_the_machine(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    docs = dataplane.documents(dataplane.app_kinds(_ctx("dataplane-probe", session, tmp_path)))
    text = service.write(tmp_path / "services.yaml", docs).read_text()
    assert docs[0]["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "python",
        "-m",
        "bench.apps.benchapp",
    ]
    for machine_path in (sys.executable, sys.prefix, sys.base_prefix):
        assert machine_path not in text


async def test_scale_from_zero_needs_the_hello_world_example_folder(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    ctx = _ctx("scale-from-zero", session, tmp_path, helloworld_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ParamError, match="set app=benchapp"):
        coldstart.documents(ctx, 1)


async def test_scale_from_zero_image_services_name_only_the_image(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    ctx = _ctx("scale-from-zero", session, tmp_path, app="image", image=IMAGE)
    docs = coldstart.documents(ctx, 2)
    assert [d["metadata"]["name"] for d in docs] == ["sfz-2-01", "sfz-2-02"]
    assert [d["spec"]["template"]["spec"]["containers"] for d in docs] == [[{"image": IMAGE}]] * 2
    # `serving up --runtime auto` runs a container with no command from its image.
    [loaded, _] = load_services([service.write(tmp_path / "services.yaml", docs)])
    assert container.runs_as_container(container.AUTO, IMAGE, loaded.template.container.command)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        pytest.param({"app": "image"}, "parameter 'image' is required with app=image", id="image-missing"),
        pytest.param({"image": IMAGE}, "only used with app=image", id="image-without-app-image"),
        pytest.param({"app": "php"}, "must be helloworld, benchapp or image, not 'php'", id="unknown-app"),
    ],
)
async def test_scale_from_zero_image_parameters_are_checked(
    tmp_path: Path, session: aiohttp.ClientSession, overrides: dict[str, Any], problem: str
) -> None:
    ctx = _ctx("scale-from-zero", session, tmp_path, helloworld_dir=str(HELLOWORLD), **overrides)
    with pytest.raises(ParamError, match=problem):
        coldstart.documents(ctx, 1)


RUNTIME = ContainerRuntime("podman", "/usr/bin/podman")


def _empty(folder: Path) -> bool:
    return not any(folder.iterdir())


async def _no_runtime(choice: str) -> ContainerRuntime:
    raise container.RuntimeUnavailable("no container runtime works here (podman: not installed)")


async def _a_runtime(choice: str) -> ContainerRuntime:
    return RUNTIME


async def _absent(runtime: ContainerRuntime, image: str) -> bool:
    return False


@pytest.mark.parametrize(
    ("detect", "problem"),
    [
        pytest.param(_no_runtime, "app=image runs containers, but no container runtime", id="no-runtime"),
        pytest.param(_a_runtime, "not in podman's local storage", id="image-absent"),
    ],
)
async def test_scale_from_zero_image_needs_a_runtime_and_the_image_before_it_starts(
    tmp_path: Path,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    detect: Any,
    problem: str,
) -> None:
    monkeypatch.setattr(container, "detect", detect)
    monkeypatch.setattr(container, "image_present", _absent)
    ctx = _ctx("scale-from-zero", session, tmp_path, app="image", image=IMAGE)
    with pytest.raises(ParamError, match=problem):
        await coldstart.run(ctx)
    assert _empty(tmp_path)  # nothing was started, not even the floor


def test_load_test_steps_scale_to_the_top_rate() -> None:
    assert loadtest.step_rates(150, [1, 2, 3]) == [50, 100, 150]
    assert loadtest.step_rates(100, [0.5, 1]) == [50, 100]


@pytest.mark.parametrize(
    ("t", "rolled_at", "phase"),
    [
        pytest.param(1.0, 9.0, rollout.BEFORE, id="before"),
        pytest.param(5.0, 9.0, rollout.DURING, id="during"),
        pytest.param(9.0, 9.0, rollout.DURING, id="last-old-answer"),
        pytest.param(9.5, 9.0, rollout.AFTER, id="after"),
        pytest.param(20.0, None, rollout.DURING, id="never-rolled"),
    ],
)
def test_rollout_phase_of_a_request(t: float, rolled_at: float | None, phase: str) -> None:
    sample = Sample(target="t", scheduled=t, send_lag=0, latency=0.1, status=200)
    assert rollout.phase_of(sample, 4.0, rolled_at) == phase


def _wake(**figures: float | None) -> Wake:
    base: dict[str, Any] = {
        "group": 1,
        "service": "s",
        "time_to_first_200": 1000.0,
        "activator_wait": 950.0,
        "pod_start": 100.0,
        "readiness": 800.0,
        "activator_after_ready": 50.0,
        "errors": 0,
    }
    return Wake(**{**base, **figures})


@pytest.mark.parametrize(
    ("wake", "parts"),
    [
        pytest.param(_wake(), [100.0, 800.0, 50.0, 50.0], id="all-parts"),
        pytest.param(_wake(activator_wait=700.0), [100.0, 800.0, 0.0, 100.0], id="forwarded-before-ready"),
        pytest.param(_wake(readiness=None), [100.0, 0.0, 850.0, 50.0], id="readiness-unknown"),
        pytest.param(_wake(time_to_first_200=None), [0.0, 0.0, 0.0, 0.0], id="never-answered"),
        pytest.param(_wake(time_to_first_200=500.0), [100.0, 400.0, 0.0, 0.0], id="clipped-to-total"),
    ],
)
def test_wake_parts_add_up_to_the_time_to_first_200(wake: Wake, parts: list[float]) -> None:
    got = wake.parts()
    assert list(got) == list(PARTS)
    assert list(got.values()) == pytest.approx(parts)
    assert sum(got.values()) == pytest.approx(wake.time_to_first_200 or 0.0)


def _status(*revisions: dict[str, Any]) -> dict[str, Any]:
    return {"services": [{"name": r.pop("service"), "revisions": [r]} for r in revisions]}


def test_at_zero_needs_the_autoscaler_to_ask_for_zero_and_no_pod_left() -> None:
    zero = {"name": "a-00001", "autoscaler_desired_pods": 0, "actual_pods": 0, "terminating_pods": 0}
    assert at_zero(_status({"service": "a", **zero}), ["a"])
    assert not at_zero(_status({"service": "a", **zero, "terminating_pods": 1}), ["a"])
    assert not at_zero(_status({"service": "a", **zero, "autoscaler_desired_pods": None}), ["a"])
    assert not at_zero(_status({"service": "a", **zero}), ["a", "b"])


def test_all_ready_counts_ready_pods_of_the_newest_revision() -> None:
    status = _status({"service": "a", "name": "a-00002", "ready_pods": 1})
    assert all_ready(status, ["a"])
    assert not all_ready(status, ["a"], pods=2)
    assert not all_ready(status, ["b"])


def test_pod_points_from_a_status_document() -> None:
    status = _status(
        {
            "service": "a",
            "name": "a-00001",
            "desired_pods": 3,
            "actual_pods": 2,
            "ready_pods": 1,
            "mode": "Serve",
        }
    )
    [point] = pod_points(status, 4.5)
    assert (point.t, point.revision, point.desired, point.actual, point.ready, point.mode) == (
        4.5,
        "a-00001",
        3,
        2,
        1,
        "Serve",
    )
