"""The queue-proxy fork server with real processes: a forked queue-proxy serves a real app, reports its exit
like an exec'd one, sees only its spec's environment, and no process outlives the server or `serving up`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from controller.forkserver import ForkServer
from controller.podspec import queue_proxy_argv
from controller.process import OsLauncher, Process, ProcessSpec
from tests.fakes.app import FakeApp
from tests.fakes.process import free_port

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = 30.0
"""Seconds any wait may take on a loaded test machine."""


async def until(check: Callable[[], bool | Awaitable[bool]], message: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {message}")
        await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def qp_spec(tmp_path: Path, user_port: int, name: str = "qp", **overrides: str) -> tuple[ProcessSpec, int]:
    serving = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SERVING_NAMESPACE": "default",
        "SERVING_CONFIGURATION": "hello",
        "SERVING_REVISION": "hello-00001",
        "SERVING_POD": name,
        "SERVING_POD_IP": "127.0.0.1",
        "USER_PORT": str(user_port),
        "QUEUE_BIND_ADDRESS": "127.0.0.1",
        "QUEUE_SERVING_PORT": str(serving),
        "QUEUE_ADMIN_PORT": str(free_port()),
        "QUEUE_STATS_PORT": str(free_port()),
        "QUEUE_METRICS_PORT": str(free_port()),
        "DRAIN_QUIET_PERIOD": "0s",
        **overrides,
    }
    cwd = tmp_path / name
    cwd.mkdir(exist_ok=True)
    spec = ProcessSpec(argv=queue_proxy_argv(), env=env, cwd=cwd, log_path=tmp_path / "logs" / f"{name}.log")
    return spec, serving


@pytest.fixture
async def forkserver(tmp_path: Path) -> AsyncIterator[ForkServer]:
    server = ForkServer(tmp_path / "forkserver.log", OsLauncher())
    await server.open()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def app() -> AsyncIterator[FakeApp]:
    async with FakeApp() as running:
        yield running


async def get(port: int, path: str = "/") -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, await resp.text()


async def serves(port: int) -> bool:
    try:
        status, _ = await get(port)
    except aiohttp.ClientError:
        return False
    return status == 200


async def wait_exit(process: Process) -> int:
    return await asyncio.wait_for(process.wait(), TIMEOUT)


async def test_forked_queue_proxy_serves_then_drains_on_sigterm(
    forkserver: ForkServer, app: FakeApp, tmp_path: Path
) -> None:
    spec, port = qp_spec(tmp_path, app.port)
    process = await forkserver.start(spec)
    await until(lambda: serves(port), "the forked queue-proxy never served the app")
    assert await get(port) == (200, "hello world")
    assert os.getpgid(process.pid) == process.pid, "the child leads its own process group"
    assert os.getsid(process.pid) == process.pid, "the child has its own session"
    assert os.readlink(f"/proc/{process.pid}/cwd") == str(spec.cwd.resolve())
    assert os.readlink(f"/proc/{process.pid}/fd/0") == os.devnull
    process.signal(signal.SIGTERM)
    assert await wait_exit(process) == 0
    assert process.returncode == 0
    assert "drained; exiting" in spec.log_path.read_text()


async def test_child_killed_by_sigkill_reports_minus_nine(
    forkserver: ForkServer, app: FakeApp, tmp_path: Path
) -> None:
    spec, port = qp_spec(tmp_path, app.port)
    process = await forkserver.start(spec)
    await until(lambda: serves(port), "the forked queue-proxy never served the app")
    process.signal(signal.SIGKILL)
    assert await wait_exit(process) == -signal.SIGKILL


async def test_invalid_environment_exits_1_with_every_problem_in_the_log(
    forkserver: ForkServer, tmp_path: Path
) -> None:
    spec, _ = qp_spec(tmp_path, free_port(), USER_PORT="not-a-port", DRAIN_QUIET_PERIOD="soon")
    del spec.env["SERVING_NAMESPACE"]
    process = await forkserver.start(spec)
    assert await wait_exit(process) == 1
    logged = spec.log_path.read_text()
    for name in ("USER_PORT", "DRAIN_QUIET_PERIOD", "SERVING_NAMESPACE"):
        assert name in logged


async def test_environment_is_the_specs_only(
    tmp_path: Path, app: FakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server runs with a variable the queue-proxy would reject; a spec without it must not see it."""
    monkeypatch.setenv("CONTAINER_CONCURRENCY", "not-a-number")
    server = ForkServer(tmp_path / "forkserver.log", OsLauncher())
    await server.open()
    try:
        spec, port = qp_spec(tmp_path, app.port)
        process = await server.start(spec)
        await until(lambda: serves(port), f"queue-proxy did not serve:\n{spec.log_path.read_text()}")
        process.signal(signal.SIGTERM)
        assert await wait_exit(process) == 0
    finally:
        await server.close()


async def test_other_program_is_executed_by_the_server_with_the_specs_environment(
    forkserver: ForkServer, tmp_path: Path
) -> None:
    code = (
        "import json, os, sys; print(json.dumps([os.getppid(), os.getcwd(), dict(os.environ)])); sys.exit(3)"
    )
    spec = ProcessSpec(
        argv=("python3", "-c", code),
        env={"PATH": str(Path(sys.executable).parent), "ONLY": "this", "LC_ALL": "C.UTF-8"},
        cwd=tmp_path,
        log_path=tmp_path / "app.log",
    )
    process = await forkserver.start(spec)
    assert await wait_exit(process) == 3
    parent, cwd, env = json.loads(spec.log_path.read_text())
    assert parent == forkserver.pid
    assert cwd == str(tmp_path.resolve())  # noqa: ASYNC240  # a path computation, no disk wait
    assert env == spec.env


async def test_missing_program_raises_oserror(forkserver: ForkServer, tmp_path: Path) -> None:
    spec = ProcessSpec(
        argv=("no-such-program-here",),
        env={"PATH": "/nonexistent"},
        cwd=tmp_path,
        log_path=tmp_path / "x.log",
    )
    with pytest.raises(FileNotFoundError, match="no-such-program-here"):
        await forkserver.start(spec)
    assert forkserver.pid is not None, "a failed start does not stop the server"


async def test_missing_working_directory_raises_oserror(forkserver: ForkServer, tmp_path: Path) -> None:
    spec, _ = qp_spec(tmp_path, free_port())
    missing = ProcessSpec(argv=spec.argv, env=spec.env, cwd=tmp_path / "nowhere", log_path=spec.log_path)
    with pytest.raises(FileNotFoundError):
        await forkserver.start(missing)


async def test_killed_server_takes_its_children_and_is_replaced(
    forkserver: ForkServer, app: FakeApp, tmp_path: Path
) -> None:
    first, port = qp_spec(tmp_path, app.port, "first")
    running = await forkserver.start(first)
    await until(lambda: serves(port), "the first queue-proxy never served")
    old = forkserver.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    assert await wait_exit(running) == -signal.SIGKILL
    await until(lambda: not alive(running.pid), "a queue-proxy outlived its fork server")
    second, port = qp_spec(tmp_path, app.port, "second")
    replacement = await forkserver.start(second)
    await until(lambda: serves(port), "no queue-proxy started after the fork server died")
    assert forkserver.pid not in (None, old)
    replacement.signal(signal.SIGTERM)
    assert await wait_exit(replacement) == 0


async def test_close_leaves_no_process(tmp_path: Path, app: FakeApp) -> None:
    server = ForkServer(tmp_path / "forkserver.log", OsLauncher())
    spec, port = qp_spec(tmp_path, app.port)
    process = await server.start(spec)
    await until(lambda: serves(port), "the forked queue-proxy never served")
    server_pid = server.pid
    assert server_pid is not None
    await server.close()
    assert await wait_exit(process) == -signal.SIGKILL
    await until(lambda: not alive(process.pid) and not alive(server_pid), "a process outlived close()")


_OWNER = """
import asyncio, json, sys
from pathlib import Path
from controller.forkserver import ForkServer
from controller.process import OsLauncher, ProcessSpec

async def main() -> None:
    spec = ProcessSpec(**{**json.loads(sys.argv[1]), "cwd": Path(sys.argv[2]), "log_path": Path(sys.argv[3])})
    server = ForkServer(Path(sys.argv[2]) / "forkserver.log", OsLauncher())
    child = await server.start(spec)
    print(json.dumps([server.pid, child.pid]), flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_server_and_children_die_with_their_owner(tmp_path: Path, app: FakeApp) -> None:
    """`serving up` killed with SIGKILL cannot clean up: the kernel must take the server and its children."""
    spec, port = qp_spec(tmp_path, app.port)
    fields = json.dumps({"argv": list(spec.argv), "env": spec.env})
    owner = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _OWNER,
        fields,
        str(spec.cwd),
        str(spec.log_path),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert owner.stdout is not None
        line = await asyncio.wait_for(owner.stdout.readline(), TIMEOUT)
        server_pid, child_pid = json.loads(line)
        await until(lambda: serves(port), "the forked queue-proxy never served")
    finally:
        owner.kill()
        await owner.wait()
    await until(lambda: not alive(server_pid), "the fork server outlived its owner")
    await until(lambda: not alive(child_pid), "a forked queue-proxy outlived its owner")


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


@pytest.mark.parametrize("through", ["fork server", "plain launcher"])
async def test_a_spec_s_nice_lowers_the_child_s_priority(
    forkserver: ForkServer, tmp_path: Path, through: str
) -> None:
    launcher = forkserver if through == "fork server" else OsLauncher()
    spec = ProcessSpec(
        argv=("python3", "-c", "import os, sys, time; print(os.nice(0)); sys.stdout.flush(); time.sleep(60)"),
        env={"PATH": str(Path(sys.executable).parent)},
        cwd=tmp_path,
        log_path=tmp_path / "nice.log",
        nice=5,
    )
    process = await launcher.start(spec)
    try:
        await until(lambda: spec.log_path.exists() and spec.log_path.read_text() != "", "no output")
        assert int(spec.log_path.read_text()) == os.nice(0) + 5
        assert niceness(process.pid) == os.nice(0) + 5
    finally:
        process.signal(signal.SIGKILL)
        await wait_exit(process)
