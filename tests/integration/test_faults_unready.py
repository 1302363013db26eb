"""Apps that never become ready, under thousands of requests: one that runs but never listens on `$PORT`,
and one that exits 1 as soon as it starts (a crash loop). Every request waits in the activator and gets a
504 once the revision's timeout has passed, a client that hangs up first leaves the queue at once, `serving
status` says why the revision is not ready, and the platform's processes hold no more file descriptors or
memory afterwards than before.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.local.runtime.backoff import BackoffPolicy
from tests.integration.conftest import ServingUp, marked_processes, write_app_service
from tests.integration.test_faults import _process_usage
from tests.integration.test_up import run_cli
from tests.integration.test_up_reasons import NOT_LISTENING, revision, status_json

pytestmark = pytest.mark.load


Start = Callable[..., Awaitable[ServingUp]]

TIMEOUT = 1
"""The revision's `timeoutSeconds`."""
SLACK = 3.0
"""Seconds past the timeout by which every 504 must have arrived (200 at once on a loaded 2-core machine)."""
REQUESTS = 2000
CONCURRENCY = 200
WARM_UP = 400
HANG_UP_WAVES = 20
HANG_UPS_PER_WAVE = 10
HANG_UP_INTERVAL = 0.4
"""Seconds between waves of hanging-up clients: the waves cover most of the run."""
HANG_UP_AFTER = 0.3
"""Seconds after which a hanging-up client closes its connection: well before the revision timeout."""
CLIENT_TIMEOUT = 15.0
"""A request still unanswered after this long is recorded as a transport error (status 0): a hang."""
FD_BOUND = 32
"""More descriptors a platform process may hold after the run than after the warm-up. Both end the same way
(200 requests answered at once after the last hang-up), so the router's idle connections to the activator
(and their other ends) are the same 100 before and after; measured: -2 to +1. A leak of one descriptor per
request, or per hung-up client, would be 2,200 or 200."""
MIB_BOUND = 6
"""More resident MiB a platform process may have after the run than after the warm-up. Measured: up to
2 MiB (the router and the activator grow by 1-2 MiB per 2,200 such requests over their first 20,000 to
40,000, then not at all: allocator warm-up, not a leak). A leak of 2 KiB or more per request (a request
head, an exchange, a task left behind) adds over 4 MiB on top: 2 KiB x 2,200 = 4.3 MiB."""

NEVER_LISTENS = '''"""Runs, and never listens on $PORT."""
import time

print("up, and not listening", flush=True)
time.sleep(3600)
'''

CRASHES_AT_START = '''"""Notes each start in starts.log, then exits 1 at once."""
import sys

with open("starts.log", "a") as starts:
    starts.write("start\\n")
sys.exit(1)
'''

CRASH_LOOP = re.compile(r"^CrashLoopBackOff: restarting in \d+s \(user container exit code 1\)$")
"""A crash-looping pod's reason while its restart is held back (`\\d+`: 1, 2, 4, 8, then 10 s)."""
EXITED = "user container exit code 1"


def _service(folder: Path, name: str, script: str, source: str) -> Path:
    """A Service running `script` with a 1 s timeout and at most one pod, so that the platform's processes
    are the same before and after the run (a second queue-proxy would be growth that is no leak)."""
    annotations = {"autoscaling.knative.dev/max-scale": "1"}
    return write_app_service(
        folder, name, annotations=annotations, script=script, source=source, timeout_seconds=TIMEOUT
    )


async def _send(up: ServingUp, host: str, count: int, concurrency: int) -> list[tuple[int, float]]:
    """`count` GETs from `concurrency` keep-alive clients, each sending its next one once it has an answer;
    (status, or 0 for a transport error or no answer within `CLIENT_TIMEOUT`; seconds) of each."""
    results: list[tuple[int, float]] = []
    remaining = count
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    ) as session:

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.monotonic()
                try:
                    async with session.get(up.url("/"), headers={"Host": host}) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                results.append((status, time.monotonic() - started))

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return results


async def _hang_ups(up: ServingUp, host: str, waves: int) -> collections.Counter[str]:
    """`waves` waves of `HANG_UPS_PER_WAVE` clients, `HANG_UP_INTERVAL` apart, each sending a GET on its own
    connection and closing it `HANG_UP_AFTER` seconds later; counts `hung up`, `answered` (before hanging
    up) and `failed` (a transport error) clients."""
    outcomes: collections.Counter[str] = collections.Counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as session:

        async def one() -> None:
            try:
                async with asyncio.timeout(HANG_UP_AFTER):
                    async with session.get(up.url("/"), headers={"Host": host}) as response:
                        await response.read()
                outcomes["answered"] += 1
            except TimeoutError:
                outcomes["hung up"] += 1
            except aiohttp.ClientError:
                outcomes["failed"] += 1

        tasks: list[asyncio.Task[None]] = []
        for wave in range(waves):
            if wave:
                await asyncio.sleep(HANG_UP_INTERVAL)
            tasks += [asyncio.create_task(one()) for _ in range(HANG_UPS_PER_WAVE)]
        await asyncio.gather(*tasks)
    return outcomes


def _roles(processes: dict[int, str]) -> dict[int, str]:
    """A name for each platform process (pid: command line): `serving up`, `activator`, `autoscaler`, `fork
    server`, and `queue-proxy` for a child of the fork server that did not exec."""
    fork_servers = {pid for pid, cmdline in processes.items() if "forkhost" in cmdline}

    def role(pid: int, cmdline: str) -> str:
        for component in ("activator", "autoscaler"):
            if f"controller.cli {component}" in cmdline:
                return component
        if "controller.cli up" in cmdline:
            return "serving up"
        if "forkhost" in cmdline:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            return "queue-proxy" if parent in fork_servers else "fork server"
        return cmdline

    roles = {pid: role(pid, cmdline) for pid, cmdline in processes.items()}
    twice = {name for name in roles.values() if list(roles.values()).count(name) > 1}
    return {pid: f"{name} {pid}" if name in twice else name for pid, name in roles.items()}


async def _platform(up: ServingUp, script: str) -> dict[int, str]:
    """`serving up`, the fork server, the activator, the autoscaler and the queue-proxy (not the app), by
    pid: the processes seen in two looks 0.2 s apart, so that a child forked for the app and not yet exec'd
    is not taken for one of them."""

    def look() -> dict[int, str]:
        return {pid: cmdline for pid, cmdline in marked_processes(up.marker) if script not in cmdline}

    first = look()
    await asyncio.sleep(0.2)
    return _roles({pid: cmdline for pid, cmdline in look().items() if pid in first})


def _most_starts(seconds: float) -> int:
    """The most starts the back-off allows an app that exits at once in its first `seconds`."""
    policy = BackoffPolicy()
    starts, at = 1, 0.0
    while at + policy.delay(starts) <= seconds:
        at += policy.delay(starts)
        starts += 1
    return starts


async def _activator_numbers(up: ServingUp, name: str) -> dict[str, float]:
    """The activator's own metrics for revision `name`: responses by status code (`504`: ...), requests
    waiting (`queued`) and being forwarded (`in flight`)."""
    ready_url: str = (await up.status())["components"]["activator"]["ready_url"]
    series = {
        "activator_requests_total": "",
        "activator_requests_queued": "queued",
        "activator_requests_in_flight": "in flight",
    }
    params = [("name[]", n) for n in series]
    async with (
        aiohttp.ClientSession() as session,
        session.get(ready_url.replace("/readyz", "/metrics"), params=params) as response,
    ):
        assert response.status == 200
        text = await response.text()
    numbers: dict[str, float] = {"queued": 0.0, "in flight": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("revision") == name and sample.name in series:
                numbers[series[sample.name] or sample.labels["code"]] = sample.value
    return numbers


@dataclass(frozen=True, slots=True)
class Run:
    """What one load run saw."""

    took: float
    results: list[tuple[int, float]]
    """(status or 0, seconds) of each request."""
    hang_ups: collections.Counter[str]
    routed: int
    """Requests the router routed to the revision during the run."""
    activator: dict[str, float]
    """Responses the activator finished during the run by status code; requests queued and in flight after."""
    growth: dict[str, tuple[int, float]]
    """(file descriptors, MiB) each platform process gained over the run, by role."""
    gone: list[str]
    """Platform processes alive before the run and not after it."""


async def _run(up: ServingUp, service: str, script: str) -> Run:
    """A warm-up (`WARM_UP` requests and a wave of hang-ups), then `REQUESTS` requests from `CONCURRENCY`
    clients while waves of clients hang up; the platform's processes measured 2 s after each."""
    host = up.host(service)
    name = f"{service}-00001"

    async def load(count: int, waves: int) -> tuple[list[tuple[int, float]], collections.Counter[str]]:
        hang_ups = asyncio.create_task(_hang_ups(up, host, waves))
        results = await _send(up, host, count, CONCURRENCY)
        return results, await hang_ups

    warm, warm_hang_ups = await load(WARM_UP, 1)
    assert collections.Counter(status for status, _ in warm) == {504: WARM_UP}
    assert warm_hang_ups == {"hung up": HANG_UPS_PER_WAVE}
    await asyncio.sleep(2)  # the clients have hung up: what their connections held is released
    platform = await _platform(up, script)
    before = _process_usage(list(platform))
    routed_before = await up.revision(name)
    activator_before = await _activator_numbers(up, name)

    started = time.monotonic()
    results, hang_ups = await load(REQUESTS, HANG_UP_WAVES)
    took = time.monotonic() - started
    await asyncio.sleep(2)
    after = _process_usage(list(platform))
    routed_after = await up.revision(name)
    activator_after = await _activator_numbers(up, name)

    assert routed_before is not None
    assert routed_after is not None
    return Run(
        took=took,
        results=results,
        hang_ups=hang_ups,
        routed=routed_after["requests_total"] - routed_before["requests_total"],
        activator={
            key: value - (activator_before.get(key, 0.0) if key.isdigit() else 0.0)
            for key, value in activator_after.items()
            if value != activator_before.get(key, 0.0) or not key.isdigit()
        },
        growth={
            platform[pid]: (after[pid][0] - fds, (after[pid][1] - rss) / 1024)
            for pid, (fds, rss) in before.items()
            if pid in after
        },
        gone=[platform[pid] for pid in before if pid not in after],
    )


def _report_and_check(label: str, run: Run) -> None:
    """Print the run's line, then check it: every request a 504 within the bounds, every hanging-up client
    gone before any answer and answered by nobody, each request routed once, nothing leaked."""
    statuses = collections.Counter(status for status, _ in run.results)
    latencies = [elapsed for _, elapsed in run.results]
    growth = ", ".join(f"{role} {fds:+d} fds {mib:+.1f} MiB" for role, (fds, mib) in run.growth.items())
    activator = {key: int(value) for key, value in run.activator.items()}
    print(
        f"{label}: {len(run.results)} requests, {CONCURRENCY} at once, in {run.took:.1f}s: {dict(statuses)} "
        f"after {min(latencies):.2f}-{max(latencies):.2f}s; clients hanging up after {HANG_UP_AFTER}s: "
        f"{dict(run.hang_ups)}; routed {run.routed}, activator {activator}; growth: {growth}"
    )
    assert len(run.results) == REQUESTS
    assert statuses == {504: REQUESTS}, statuses
    assert min(latencies) >= TIMEOUT - 0.01, "a 504 came before the revision timeout"
    assert max(latencies) <= TIMEOUT + SLACK, "a 504 came long after the revision timeout"
    assert run.hang_ups == {"hung up": HANG_UP_WAVES * HANG_UPS_PER_WAVE}
    # Each request, hung up or not, was routed once; the activator answered once each request that waited
    # to the end, and none of those that hung up (they left its queue at once, not at the timeout).
    assert run.routed == REQUESTS + HANG_UP_WAVES * HANG_UPS_PER_WAVE
    assert run.activator == {"504": REQUESTS, "queued": 0, "in flight": 0}
    assert run.gone == [], "a platform process ended during the run"
    for role, (fd_growth, mib_growth) in run.growth.items():
        assert fd_growth <= FD_BOUND, f"{role} holds {fd_growth} more file descriptors"
        assert mib_growth <= MIB_BOUND, f"{role} grew by {mib_growth:.1f} MiB"


async def _status(folder: Path, name: str, reason: re.Pattern[str], timeout: float) -> dict[str, Any]:
    """Revision `name` as `serving status --json` reports it, once its reason and its one pod's match
    `reason` and `serving status` shows the pod's reason too (a crash-looping app runs for a moment between
    restarts, with another reason); fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        rev = revision(await status_json(folder), name)
        code, out, err = await run_cli("status", cwd=folder)
        assert code == 0, err
        pods = rev["pods"]
        shown = len(pods) == 1 and re.search(
            rf"^ *! {re.escape(pods[0]['name'])}: {reason.pattern.lstrip('^').rstrip('$')}$", out, re.M
        )
        if shown and reason.match(rev["reason"] or "") and pods[0]["reason"] == rev["reason"]:
            return rev
        if time.monotonic() > deadline:
            raise AssertionError(f"`serving status` never gave the expected reason: {rev}\n{out}")
        await asyncio.sleep(0.2)


async def test_never_listening_app_gets_504s_in_bounded_time_and_leaks_nothing(
    serving_up: Start, tmp_path: Path
) -> None:
    """An app that runs and never listens on `$PORT`: 2,000 requests (200 at once) each get the activator's
    504 between 1 and 4 s after they were sent, 200 clients hanging up before the timeout are answered by
    nobody, `serving status` says the app is not listening, and the platform's processes gain no
    descriptors or memory."""
    up = await serving_up([_service(tmp_path, "deaf", "never_listens.py", NEVER_LISTENS)])
    name = "deaf-00001"
    await up.wait_revision(
        name, lambda r: NOT_LISTENING.match(r["reason"] or "") is not None, 30, "no not-listening reason"
    )
    run = await _run(up, "deaf", "never_listens.py")
    rev = await _status(tmp_path, name, NOT_LISTENING, 10)
    _report_and_check(f"never listening ({rev['reason']})", run)
    assert (rev["ready"], rev["actual_pods"], rev["ready_pods"]) == (False, 1, 0)
    [pod] = rev["pods"]
    assert (pod["state"], pod["restarts"], pod["last_exit"]) == ("Running", 0, None)
    assert await up.stop() == 0


async def test_app_crashing_at_start_gets_504s_in_bounded_time_and_leaks_nothing(
    serving_up: Start, tmp_path: Path
) -> None:
    """An app that exits 1 as soon as it starts, restarted with back-off: 2,000 requests (200 at once) each
    get the activator's 504 between 1 and 4 s after they were sent (never a 502 or a refused connection), 200
    clients hanging up before the timeout are answered by nobody, `serving status` shows the crash loop
    with the exit code, the back-off alone decides how often the app starts, and the platform's processes
    gain no descriptors or memory."""
    began = time.monotonic()
    up = await serving_up([_service(tmp_path, "crashy", "crashes_at_start.py", CRASHES_AT_START)])
    name = "crashy-00001"
    await up.wait_revision(
        name, lambda r: CRASH_LOOP.match(r["reason"] or "") is not None, 30, "no crash-loop reason"
    )
    run = await _run(up, "crashy", "crashes_at_start.py")
    rev = await _status(tmp_path, name, CRASH_LOOP, 20)
    starts = (tmp_path / "starts.log").read_text().count("start")
    most = _most_starts(time.monotonic() - began)
    _report_and_check(f"crash at start ({rev['reason']}; {starts} starts, back-off allows {most})", run)
    assert (rev["ready"], rev["actual_pods"], rev["ready_pods"]) == (False, 1, 0)
    [pod] = rev["pods"]
    assert (pod["state"], pod["last_exit"]) == ("CrashLoopBackOff", EXITED)
    # Read while the restart is held back, so every start so far has ended; one more may have begun since.
    assert pod["restarts"] in (starts - 1, starts), (pod["restarts"], starts)
    # Restarted at once, then 1, 2, 4, 8, 10, 10... s later, however many requests wait for it.
    assert 2 <= starts <= most, (starts, most)
    assert await up.stop() == 0
