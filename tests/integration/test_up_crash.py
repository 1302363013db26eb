"""A user process (or a queue-proxy) killed with SIGKILL under load: only requests it was serving fail, none
with a 500, and the pod comes back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.integration.conftest import APP, Load, ServingUp, eventually, write_app_service

Start = Callable[..., Awaitable[ServingUp]]

REFUSED = "connection refused by the app"
"""The queue-proxy's 502 when its app refused the connection: the proxies in front retry it elsewhere or
wait, so a client should never see it."""

CRASHING_APP = APP.replace(
    "    def do_GET(self):\n",
    "    def do_GET(self):\n"
    "        global SERVED\n"
    "        SERVED += 1\n"
    "        if SERVED > int(os.environ['CRASH_AFTER']):\n"
    "            os._exit(1)\n",
).replace("class Handler", "SERVED = 0\n\n\nclass Handler")
"""The test app, exiting (as a crash) on the request after its first `CRASH_AFTER`."""


def listening_pid(port: int) -> int | None:
    """The process with a listening TCP socket on 127.0.0.1:`port` (Linux /proc), if any."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:  # 0A: LISTEN
            inodes.add(f"socket:[{fields[9]}]")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                return int(entry.name)
        except OSError:
            continue
    return None


async def queue_proxy_pids(up: ServingUp, session: aiohttp.ClientSession) -> list[int]:
    """The queue-proxy processes of every pod, found by their ports in the platform API."""
    platform = json.loads((up.state_dir / "up.json").read_text())["platform_url"]
    async with session.get(f"{platform}/v1/revisions") as resp:
        snapshot = await resp.json()
    ports = [pod["port"] for revision in snapshot["revisions"] for pod in revision["pods"]]
    return [pid for pid in map(listening_pid, ports) if pid is not None]


async def test_killed_app_fails_only_its_in_flight_requests_and_restarts(
    serving_up: Start, tmp_path: Path
) -> None:
    yaml = write_app_service(
        tmp_path,
        "crashy",
        annotations={
            "autoscaling.knative.dev/min-scale": "2",
            "autoscaling.knative.dev/target-burst-capacity": "0",
        },
    )
    up = await serving_up([yaml])
    name = "crashy-00001"
    await up.wait_revision(
        name, lambda r: r["ready_pods"] == 2 and r["mode"] == "Serve", 40, "two ready pods in Serve mode"
    )
    workers = 6
    load = Load(up.url("/?ms=300"), up.host("crashy"), workers=workers)
    load.start()
    try:

        async def both_pods_busy() -> bool:
            return len({body.split()[-1] for _, _, status, body in load.results if status == 200}) == 2

        await eventually(both_pods_busy, 20, "the load did not reach both pods")
        victim = int(load.results[-1][3].split()[-1])
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        await up.wait_revision(
            name,
            lambda r: r["ready_pods"] == 2 and any(p["restarts"] == 1 for p in r["pods"]),
            30,
            "the crashed pod did not come back",
        )
        await asyncio.sleep(1.0)
    finally:
        await load.stop()

    failed = load.failures()
    assert len(failed) <= workers, f"more failures than requests in flight: {failed}"
    # The supervisor sees the exit within milliseconds; allow for a loaded machine.
    settled = killed_at + 0.5
    assert all(start < settled for start, _, _, _ in failed), (
        f"a request sent after the kill failed: {failed}"
    )
    after = [r for r in load.results if r[0] > settled]
    assert len(after) > 10
    assert all(status == 200 for _, _, status, _ in after)
    pids = {body.split()[-1] for _, _, status, body in after if status == 200}
    assert str(victim) not in pids
    rev = await up.revision(name)
    assert rev is not None
    restarted = [p for p in rev["pods"] if p["restarts"] == 1]
    assert len(restarted) == 1
    assert restarted[0]["last_exit"] == "user container killed by SIGKILL"


async def test_killed_app_behind_the_activator_fails_no_request_sent_after_the_kill(
    serving_up: Start, tmp_path: Path
) -> None:
    """With the activator in the path: the dead app's queue-proxy still accepts connections, so its 502 for
    the refused app is retried on the other pod, and the platform's not-ready takes the pod out at once."""
    yaml = write_app_service(
        tmp_path,
        "proxied",
        annotations={
            "autoscaling.knative.dev/min-scale": "2",
            "autoscaling.knative.dev/target-burst-capacity": "-1",  # the activator stays in the path
        },
    )
    up = await serving_up([yaml])
    name = "proxied-00001"
    await up.wait_revision(
        name, lambda r: r["ready_pods"] == 2 and r["mode"] == "Proxy", 40, "two ready pods in Proxy mode"
    )
    load = Load(up.url("/?ms=20"), up.host("proxied"), workers=4)
    load.start()
    try:

        async def both_pods_busy() -> bool:
            return len({body.split()[-1] for _, _, status, body in load.results if status == 200}) == 2

        await eventually(both_pods_busy, 20, "the load did not reach both pods")
        victim = int(load.results[-1][3].split()[-1])
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        await asyncio.sleep(2.0)
    finally:
        await load.stop()
    after = [r for r in load.results if r[0] > killed_at]
    assert len(after) > 20
    assert [r for r in after if r[2] != 200] == [], "a request sent after the kill failed"
    failed = load.failures()
    assert len(failed) <= load.workers, f"more failures than requests in flight: {failed}"


async def test_crash_looping_app_makes_requests_wait_for_it_never_refused(
    serving_up: Start, tmp_path: Path
) -> None:
    """A min-scale 1 Service whose app crashes under load (CrashLoopBackOff, no ready pod): requests wait for
    the pod to come back or get a 504 at the revision timeout, never the app's refused connection."""
    yaml = write_app_service(
        tmp_path,
        "crashloop",
        annotations={"autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/max-scale": "1"},
        extra_env={"CRASH_AFTER": "10"},
    )
    (tmp_path / "app.py").write_text(CRASHING_APP)
    yaml.write_text(
        yaml.read_text().replace(
            "      containerConcurrency:", "      timeoutSeconds: 2\n      containerConcurrency:"
        )
    )
    up = await serving_up([yaml])
    name = "crashloop-00001"
    await up.wait_revision(name, lambda r: r["ready_pods"] == 1, 40, "the pod did not get ready")
    load = Load(up.url("/"), up.host("crashloop"), workers=8)
    load.start()
    try:
        await up.wait_revision(
            name, lambda r: any(p["restarts"] >= 2 for p in r["pods"]), 20, "the app did not crash twice"
        )
        await asyncio.sleep(2.0)
    finally:
        await load.stop()
    outcomes = [(status, body.strip()) for _, _, status, body in load.results]
    assert [o for o in outcomes if o[1] == REFUSED] == [], "the app's refused connection reached the client"
    assert {status for status, _ in outcomes} <= {0, 200, 502, 504}, outcomes
    # A 502 is only for requests the app had taken when it died; the others waited, then got their answer.
    assert {body for status, body in outcomes if status == 502} <= {"error reading the app's response"}
    assert sum(1 for status, _ in outcomes if status == 504) > 0, "nothing waited for the pod"


@pytest.mark.parametrize(
    ("burst_capacity", "mode"),
    [
        pytest.param("0", "Serve", id="router-to-pod"),
        pytest.param("-1", "Proxy", id="through-the-activator"),
    ],
)
async def test_killed_queue_proxy_gives_the_client_a_502_never_a_500(
    serving_up: Start, tmp_path: Path, burst_capacity: str, mode: str
) -> None:
    """Kill -9 of a pod's queue-proxy with a slow request in flight on a warm keep-alive connection: the
    proxy in front sees a pooled connection close, retries once, is refused, and sends the request on (the
    router to the activator, the activator to another pod). The client gets a 502, or the answer of the
    replacement pod, never a 500 for an exchange forwarded again."""
    yaml = write_app_service(
        tmp_path,
        "victim",
        annotations={
            "autoscaling.knative.dev/min-scale": "1",
            "autoscaling.knative.dev/target-burst-capacity": burst_capacity,
        },
    )
    up = await serving_up([yaml])
    name = "victim-00001"
    seen: list[tuple[int, str]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for _ in range(2):
            await up.wait_revision(
                name, lambda r: r["ready_pods"] == 1 and r["mode"] == mode, 40, f"a ready pod in {mode} mode"
            )
            for _ in range(3):  # keep-alive connections along the whole path
                assert (await up.get("victim"))[0] == 200
            slow = asyncio.ensure_future(
                session.get(up.url("/?ms=2000"), headers={"Host": up.host("victim")})
            )
            await asyncio.sleep(0.5)
            pids = await queue_proxy_pids(up, session)
            assert len(pids) == 1
            os.kill(pids[0], signal.SIGKILL)
            try:
                async with await slow as resp:
                    seen.append((resp.status, await resp.text()))
            except aiohttp.ClientError as exc:  # a reset; the app had not started its answer, so none is due
                seen.append((0, repr(exc)))
    assert all(status in (200, 502) for status, _ in seen), seen
