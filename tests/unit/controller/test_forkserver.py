"""The queue-proxy fork server with real processes: a forked queue-proxy serves a real app, reports its exit
like an exec'd one, sees only its spec's environment; requests of any size go through, a lost server costs no
running process, and no process outlives `serving up`."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from controller.local.runtime import forkserver as forkserver_module
from controller.local.runtime.forkhost import INLINE_MAX
from controller.local.runtime.forkserver import ForkedProcess, ForkServer
from controller.local.runtime.podspec import queue_proxy_argv
from controller.local.runtime.process import EXIT_UNKNOWN, OsLauncher, Process, ProcessSpec
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


async def test_killed_server_leaves_running_children_and_is_replaced(
    forkserver: ForkServer, app: FakeApp, tmp_path: Path
) -> None:
    """A fork server killed with -9 takes no pod with it: the queue-proxy it forked keeps serving, a new
    server starts the next one, and the survivor still stops (and reports it) when told to."""
    first, first_port = qp_spec(tmp_path, app.port, "first")
    running = await forkserver.start(first)
    await until(lambda: serves(first_port), "the first queue-proxy never served")
    old = forkserver.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    await until(lambda: forkserver.pid is None, "the loss of the fork server went unnoticed")
    second, second_port = qp_spec(tmp_path, app.port, "second")
    replacement = await forkserver.start(second)
    await until(lambda: serves(second_port), "no queue-proxy started after the fork server died")
    assert forkserver.pid not in (None, old)
    assert alive(running.pid), "a queue-proxy died with its fork server"
    assert running.returncode is None
    assert await get(first_port) == (200, "hello world")
    running.signal(signal.SIGTERM)
    assert await wait_exit(running) == EXIT_UNKNOWN, "only its lost parent could read its status"
    replacement.signal(signal.SIGTERM)
    assert await wait_exit(replacement) == 0


def sleeper(tmp_path: Path, name: str, **env: str) -> ProcessSpec:
    """A small program that runs until killed."""
    return ProcessSpec(
        argv=("sleep", "300"),
        env={"PATH": os.environ.get("PATH", ""), **env},
        cwd=tmp_path,
        log_path=tmp_path / f"{name}.log",
    )


async def test_large_environment_reaches_the_child_and_spares_running_ones(
    forkserver: ForkServer, tmp_path: Path
) -> None:
    """1,000 variables of 200 bytes make a request larger than the socket's buffer (~208 KB): it must
    go through, and a process started earlier must not notice."""
    small = await forkserver.start(sleeper(tmp_path, "small"))
    server = forkserver.pid
    big = {f"BIG_{i:04}": "x" * 200 for i in range(1000)}
    spec = ProcessSpec(
        argv=("python3", "-c", "import json, os; print(json.dumps(dict(os.environ)))"),
        env={"PATH": str(Path(sys.executable).parent), "LC_ALL": "C.UTF-8", **big},
        cwd=tmp_path,
        log_path=tmp_path / "big.log",
    )
    assert len(json.dumps(spec.env)) > 212_992, "larger than the socket's default send buffer"
    process = await forkserver.start(spec)
    assert await wait_exit(process) == 0
    assert json.loads(spec.log_path.read_text()) == spec.env
    assert forkserver.pid == server, "the fork server was replaced"
    assert alive(small.pid), "a large spec killed an unrelated process"
    assert small.returncode is None
    small.signal(signal.SIGKILL)
    assert await wait_exit(small) == -signal.SIGKILL


async def test_too_long_program_name_fails_its_start_alone(forkserver: ForkServer, tmp_path: Path) -> None:
    """An error naming a 100 KB program is larger than a pipe's buffer and makes a large reply; only
    that start fails, with the kernel's reason."""
    small = await forkserver.start(sleeper(tmp_path, "small"))
    server = forkserver.pid
    spec = ProcessSpec(
        argv=("p" * 100_000,), env={"PATH": "/nonexistent"}, cwd=tmp_path, log_path=tmp_path / "x.log"
    )
    with pytest.raises(OSError, match="too long") as failed:
        await asyncio.wait_for(forkserver.start(spec), TIMEOUT)
    assert failed.value.errno == errno.ENAMETOOLONG
    assert failed.value.filename == spec.argv[0]
    assert forkserver.pid == server, "the fork server was replaced"
    assert alive(small.pid), "a failed start killed an unrelated process"
    small.signal(signal.SIGKILL)
    assert await wait_exit(small) == -signal.SIGKILL


async def test_many_starts_at_once_while_the_server_is_busy_all_complete(
    forkserver: ForkServer, tmp_path: Path
) -> None:
    """More requests than the socket holds (its ~208 KB send buffer) wait for room, every one of them."""
    server = forkserver.pid
    assert server is not None
    pad = "x" * (INLINE_MAX - 1000)  # each request as large as a packet gets: the buffer fills sooner
    os.kill(server, signal.SIGSTOP)
    try:
        starts = [
            asyncio.create_task(forkserver.start(sleeper(tmp_path, f"s{i}", PAD=pad))) for i in range(64)
        ]
        await asyncio.sleep(0.05)  # every start reaches the full socket
    finally:
        os.kill(server, signal.SIGCONT)
    processes = await asyncio.wait_for(asyncio.gather(*starts), TIMEOUT)
    assert len({p.pid for p in processes}) == 64
    for process in processes:
        process.signal(signal.SIGKILL)
        assert await wait_exit(process) == -signal.SIGKILL


def fork_servers() -> list[int]:
    """Pids of the live fork servers this test process started."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if (
            fields[0] != "Z"
            and int(fields[1]) == os.getpid()
            and b"controller.local.runtime.forkhost" in cmdline
        ):
            found.append(int(entry.name))
    return found


async def test_starts_at_once_after_a_loss_start_one_server(forkserver: ForkServer, tmp_path: Path) -> None:
    old = forkserver.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    await until(lambda: forkserver.pid is None, "the loss of the fork server went unnoticed")
    processes = await asyncio.gather(*(forkserver.start(sleeper(tmp_path, f"s{i}")) for i in range(4)))
    assert fork_servers() == [forkserver.pid]
    for process in processes:
        process.signal(signal.SIGKILL)
        await wait_exit(process)


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


async def test_nul_byte_in_working_directory_fails_its_start_alone(
    forkserver: ForkServer, tmp_path: Path
) -> None:
    small = await forkserver.start(sleeper(tmp_path, "small"))
    server = forkserver.pid
    spec = sleeper(tmp_path, "nul")
    bad = ProcessSpec(argv=spec.argv, env=spec.env, cwd=tmp_path / "a\0b", log_path=spec.log_path)
    with pytest.raises(OSError, match="null byte") as failed:
        await asyncio.wait_for(forkserver.start(bad), TIMEOUT)
    assert failed.value.errno == errno.EINVAL
    assert forkserver.pid == server, "the fork server was replaced"
    assert alive(small.pid)
    small.signal(signal.SIGKILL)
    await wait_exit(small)


_FORKS_THEN_DIES = """
import os, socket, sys, time
sock = socket.socket(fileno=int(sys.argv[-1]))
_, fds, _, _ = socket.recv_fds(sock, 1 << 20, 4)
if os.fork() == 0:
    sock.close()
    os.setsid()
    os.write(fds[1], str(os.getpid()).encode())
    with open(sys.argv[1], "w") as out:
        out.write(str(os.getpid()))
    os.closerange(3, 1024)
    time.sleep(300)
os._exit(0)
"""
"""A server that forks for the first request, then dies before it answers."""


async def test_child_of_a_server_lost_before_answering_is_kept_not_started_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forked = tmp_path / "forked.pid"
    monkeypatch.setattr(forkserver_module, "_HOST", ("-c", _FORKS_THEN_DIES, str(forked)))
    server = ForkServer(tmp_path / "forkserver.log", OsLauncher())
    try:
        process = await asyncio.wait_for(server.start(sleeper(tmp_path, "s")), TIMEOUT)
        await until(forked.exists, "the server did not fork")
        assert process.pid == int(forked.read_text()), "the request was started a second time"
        assert alive(process.pid)
        assert process.returncode is None
        assert server.pid is None
    finally:
        await server.close()
    assert await wait_exit(process) == -signal.SIGKILL
    await until(lambda: not alive(process.pid), "a process started through a lost server outlived close()")


_GARBLES = """
import socket, sys, time
sock = socket.socket(fileno=int(sys.argv[-1]))
socket.recv_fds(sock, 1 << 20, 4)
sock.send(b'{"id": 1, "pid":')
time.sleep(300)
"""
"""A server that answers the first request with half a message, then hangs."""


async def test_garbled_answer_abandons_the_server_and_starts_the_plain_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forkserver_module, "_HOST", ("-c", _GARBLES))
    server = ForkServer(tmp_path / "forkserver.log", OsLauncher())
    await server.open()
    garbler = server.pid
    assert garbler is not None
    try:
        process = await asyncio.wait_for(server.start(sleeper(tmp_path, "s")), TIMEOUT)
        assert not isinstance(process, ForkedProcess), "started the plain way"
        assert alive(process.pid)
        await until(lambda: not alive(garbler), "the server that garbled its answer still runs")
        assert server.pid is None
        process.signal(signal.SIGKILL)
        assert await wait_exit(process) == -signal.SIGKILL
    finally:
        await server.close()
        if alive(garbler):
            os.kill(garbler, signal.SIGKILL)


_OWNER = """
import asyncio, json, sys
from pathlib import Path
from controller.local.runtime.forkhost import INLINE_MAX
from controller.local.runtime import forkserver as forkserver_module
from controller.local.runtime.forkserver import ForkedProcess, ForkServer
from controller.local.runtime.process import OsLauncher, ProcessSpec

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


_OWNER_OF_ORPHANS = """
import asyncio, json, os, signal, sys
from pathlib import Path
from controller.local.runtime.forkhost import INLINE_MAX
from controller.local.runtime import forkserver as forkserver_module
from controller.local.runtime.forkserver import ForkedProcess, ForkServer
from controller.local.runtime.process import OsLauncher, ProcessSpec

async def main() -> None:
    folder = Path(sys.argv[1])
    env = {"PATH": os.environ["PATH"]}
    spec = ProcessSpec(argv=("sleep", "300"), env=env, cwd=folder, log_path=folder / "s.log")
    server = ForkServer(folder / "forkserver.log", OsLauncher())
    first = await server.start(spec)
    lost = server.pid
    os.kill(lost, signal.SIGKILL)
    for _ in range(1000):
        if server.pid is None:
            break
        await asyncio.sleep(0.01)
    second = await server.start(spec)
    print(json.dumps([lost, server.pid, first.pid, second.pid]), flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_children_of_a_lost_server_die_with_their_owner(tmp_path: Path) -> None:
    """A process that outlived its fork server still goes when `serving up` dies by SIGKILL: the server
    started after the loss takes it along with its own children."""
    owner = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _OWNER_OF_ORPHANS, str(tmp_path), stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    try:
        assert owner.stdout is not None
        line = await asyncio.wait_for(owner.stdout.readline(), TIMEOUT)
        lost, server, orphan, child = json.loads(line)
        await until(lambda: not alive(lost), "the killed fork server still runs")
        assert alive(orphan), "a process died with its fork server"
        assert alive(child)
    finally:
        owner.kill()
        await owner.wait()
    left = (server, orphan, child)
    await until(
        lambda: not any(map(alive, left)),
        "the new fork server, the orphan or the new child outlived the owner",
    )


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
