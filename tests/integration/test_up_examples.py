"""The shipped examples under `serving up`: hello-world answers, and the traffic-split walk-through works."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, ServingUp, eventually

Start = Callable[..., Awaitable[ServingUp]]
EXAMPLES = ROOT / "examples"


async def test_helloworld_python_answers_after_a_cold_start(serving_up: Start) -> None:
    up = await serving_up([EXAMPLES / "helloworld-python" / "service.yaml"])
    status, body = await up.get("helloworld-python")
    assert (status, body) == (200, "Hello Python Sample v1!\n")


async def test_grpc_python_greets_the_example_client(
    serving_up: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Service runs `python3 server.py`: this interpreter's, as from an activated virtualenv.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    folder = EXAMPLES / "grpc-python"
    up = await serving_up([folder / "service.yaml"])
    target = f"helloworld-grpc.default.localhost:{up.port}"
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        "client.py",
        "--target",
        target,
        "--timeout",
        "60",
        "Ada",
        cwd=folder,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(client.communicate(), 90)
    assert (client.returncode, out.decode(), err.decode()) == (0, "Hello Ada from gRPC Sample v1!\n", "")


async def test_traffic_split_walkthrough(serving_up: Start, tmp_path: Path) -> None:
    examples = tmp_path / "examples"
    shutil.copytree(EXAMPLES / "helloworld-python", examples / "helloworld-python")
    shutil.copytree(EXAMPLES / "traffic-split", examples / "traffic-split")
    folder = examples / "traffic-split"
    service = folder / "service.yaml"
    shutil.copyfile(folder / "v1.yaml", service)
    up = await serving_up([service])
    assert await up.get("traffic-split") == (200, "Hello traffic split v1!\n")

    shutil.copyfile(folder / "v2.yaml", service)
    v2_host = up.host("traffic-split", tag="v2")

    async def v2_ready() -> bool:
        return (await up.get("traffic-split", host=v2_host))[0] == 200

    await eventually(v2_ready, 30, "the v2 tag never answered")
    assert await up.get("traffic-split", host=v2_host) == (200, "Hello traffic split v2!\n")
    assert await up.get("traffic-split", host=up.host("traffic-split", tag="v1")) == (
        200,
        "Hello traffic split v1!\n",
    )
    latest = up.host("traffic-split", tag="latest")

    async def latest_is_v2() -> bool:
        # `latestRevision` follows the latest *ready* revision: v2 once the platform saw its pod ready.
        return await up.get("traffic-split", host=latest) == (200, "Hello traffic split v2!\n")

    await eventually(latest_is_v2, 10, "the latest tag did not move to v2")
    counts = Counter([(await up.get("traffic-split"))[1] for _ in range(200)])
    assert set(counts) == {"Hello traffic split v1!\n", "Hello traffic split v2!\n"}
    assert 15 <= counts["Hello traffic split v2!\n"] <= 70, counts  # 20 % of 200, loosely
    [svc] = (await up.status())["services"]
    percents = {r["name"]: (r["traffic_percent"], r["tags"]) for r in svc["revisions"]}
    assert percents == {"traffic-split-v1": (80, ["v1"]), "traffic-split-v2": (20, ["v2", "latest"])}


@pytest.mark.eventing
async def test_eventing_example_delivers_a_signed_push(
    serving_up: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/eventing: its own `send_push.py` reaches event-display through the GitHubSource, the Broker
    and the `github-pushes` Trigger."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    folder = EXAMPLES / "eventing"
    up = await serving_up([folder / "eventing.yaml"])
    sender = await asyncio.create_subprocess_exec(
        sys.executable,
        "send_push.py",
        f"http://webhook.localhost:{up.port}/default/hello-repo",
        cwd=folder,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(sender.communicate(), 90)
    assert (sender.returncode, out.decode().split()[0]) == (0, "202"), err.decode()

    async def displayed() -> bool:
        status, body = await up.get("event-display")
        return status == 200 and "dev.knative.source.github.push" in body

    await eventually(displayed, 30, "event-display shows the push event")
    triggers = {t["name"]: t for t in (await up.status())["eventing"]["triggers"]}
    assert set(triggers) == {"pings", "github-pushes"}
