"""Shared helpers for integration tests: real `serving ...` processes on 127.0.0.1, and leak checks.

`ServingUp` runs `serving up` in a temporary folder (its state dir is `.serving/` there) and reads its
status over the control API; every process it starts carries a marker in its environment, so a test can
prove that none is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.process import free_port, processes_with_env

SERVING: tuple[str, ...] = (sys.executable, "-m", "controller.cli")
ROOT = Path(__file__).resolve().parents[2]
MARKER_ENV = "SERVING_TEST_MARKER"


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float, message: str, interval: float = 0.1
) -> None:
    """Poll `check` until it is true; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s: {message}")
        await asyncio.sleep(interval)


def marked_processes(marker: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose environment carries `marker`."""
    return processes_with_env(MARKER_ENV, marker)


class ServingUp:
    """One `serving up` process for a test."""

    def __init__(self, folder: Path, files: Sequence[Path], args: Sequence[str] = ()) -> None:
        self.folder = folder
        self.files = list(files)
        self.port = free_port()
        self.args = list(args)
        self.marker = uuid.uuid4().hex
        self.out_path = folder / "serving-up.out"
        self.proc: asyncio.subprocess.Process | None = None
        self.control_url = ""
        self.session: aiohttp.ClientSession | None = None

    @property
    def state_dir(self) -> Path:
        return self.folder / ".serving"

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def host(self, service: str, namespace: str = "default", tag: str | None = None) -> str:
        name = f"{tag}-{service}" if tag else service
        return f"{name}.{namespace}.localhost:{self.port}"

    def output(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    async def start(self, timeout: float = 60.0, *, wait: bool = True) -> None:
        """Start `serving up`; with `wait`, return once its state file names the control API."""
        env = {**os.environ, MARKER_ENV: self.marker, "PYTHONUNBUFFERED": "1"}
        with self.out_path.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *SERVING,
                "up",
                *map(str, self.files),
                "--port",
                str(self.port),
                *self.args,
                cwd=self.folder,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        state = self.state_dir / "up.json"
        if not wait:
            return

        async def started() -> bool:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise AssertionError(f"serving up exited {self.proc.returncode}:\n{self.output()}")
            if not state.exists():
                return False
            self.control_url = json.loads(state.read_text())["control_url"]
            return True

        await eventually(started, timeout, f"serving up did not start:\n{self.output()}")
        self.session = aiohttp.ClientSession()

    async def status(self) -> dict[str, Any]:
        assert self.session is not None
        async with self.session.get(f"{self.control_url}/status") as resp:
            assert resp.status == 200
            data: dict[str, Any] = await resp.json()
            return data

    async def revision(self, name: str) -> dict[str, Any] | None:
        for service in (await self.status())["services"]:
            for rev in service["revisions"]:
                if rev["name"] == name:
                    result: dict[str, Any] = rev
                    return result
        return None

    async def wait_revision(
        self, name: str, check: Callable[[dict[str, Any]], bool], timeout: float, message: str
    ) -> None:
        async def ok() -> bool:
            rev = await self.revision(name)
            return rev is not None and check(rev)

        try:
            await eventually(ok, timeout, message, interval=0.2)
        except AssertionError:
            raise AssertionError(f"{message}; revision now: {await self.revision(name)}") from None

    async def get(self, service: str, path: str = "/", **kwargs: Any) -> tuple[int, str]:
        assert self.session is not None
        headers = {**kwargs.pop("headers", {}), "Host": kwargs.pop("host", None) or self.host(service)}
        async with self.session.get(self.url(path), headers=headers, **kwargs) as resp:
            return resp.status, await resp.text()

    async def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Signal `serving up`, wait for it to exit, and check that no process it started survives."""
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.proc is None:
            return 0
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"serving up did not exit {timeout:g}s after signal {sig}") from None
        deadline = time.monotonic() + 5.0
        while marked_processes(self.marker) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        left = marked_processes(self.marker)
        for pid, _ in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert left == [], f"processes left behind: {left}"
        return code


@pytest.fixture
async def serving_up(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[ServingUp]]]:
    """Start `serving up` with `await serving_up([files], [args])`; stopped (and checked) at teardown."""
    started: list[ServingUp] = []

    async def start(files: Sequence[Path], args: Sequence[str] = ()) -> ServingUp:
        up = ServingUp(tmp_path, files, args)
        started.append(up)
        await up.start()
        return up

    yield start
    for up in started:
        if up.proc is not None and up.proc.returncode is None:
            await up.stop()


APP = '''"""A small threaded stdlib app: answers `TARGET K_REVISION pid`; `?ms=N` sleeps N ms first;
`/headers` answers the request's headers as a JSON list of [name, value] pairs."""
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # head and body leave in one write: two small writes meet Nagle and delayed ACKs (40 ms)

    def do_GET(self):
        query = parse_qs(urlsplit(self.path).query)
        time.sleep(int(query.get("ms", ["0"])[0]) / 1000)
        if urlsplit(self.path).path == "/headers":
            body = json.dumps([[k.lower(), v] for k, v in self.headers.items()]).encode()
        else:
            body = f"{os.environ.get('TARGET', '')} {os.environ['K_REVISION']} {os.getpid()}\\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True


print("app listening on", os.environ["PORT"], flush=True)
Server(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''


def write_app_service(
    folder: Path,
    name: str = "hello",
    *,
    target: str = "v1",
    annotations: dict[str, str] | None = None,
    container_concurrency: int = 0,
    extra_env: dict[str, str] | None = None,
    file_name: str | None = None,
    script: str = "app.py",
    source: str = APP,
    timeout_seconds: int | None = None,
) -> Path:
    """Write the app (`script`, the test app unless `source` says otherwise) and a Service YAML running it in
    `folder`; returns the YAML's path."""
    (folder / script).write_text(source)
    timeout = "" if timeout_seconds is None else f"\n      timeoutSeconds: {timeout_seconds}"
    notes = "".join(f'\n        {k}: "{v}"' for k, v in (annotations or {}).items())
    env = "".join(
        f'\n            - name: {k}\n              value: "{v}"'
        for k, v in {"TARGET": target, **(extra_env or {})}.items()
    )
    path = folder / (file_name or f"{name}.yaml")
    path.write_text(
        f"""apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    metadata:
      annotations:{notes or " {}"}
    spec:
      containerConcurrency: {container_concurrency}{timeout}
      containers:
        - image: example/{name}
          command: ["{sys.executable}", "{script}"]
          env:{env}
"""
    )
    return path


class Load:
    """`workers` clients each sending one request after another until stopped; records every outcome.

    A result is (start time, end time, HTTP status or 0 for a transport error, body or error text).
    """

    def __init__(self, url: str, host: str, *, workers: int, timeout: float = 30.0) -> None:
        self.url = url
        self.host = host
        self.workers = workers
        self.timeout = timeout
        self.results: list[tuple[float, float, int, str]] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)
        )
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def _worker(self) -> None:
        assert self._session is not None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                async with self._session.get(self.url, headers={"Host": self.host}) as resp:
                    body = await resp.text()
                    self.results.append((started, time.monotonic(), resp.status, body))
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.results.append((started, time.monotonic(), 0, repr(exc)))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        if self._session is not None:
            await self._session.close()

    def failures(self) -> list[tuple[float, float, int, str]]:
        return [r for r in self.results if r[2] != 200]


async def burst(url: str, host: str, count: int, timeout: float = 60.0) -> list[tuple[int, str]]:
    """`count` requests at once, each on its own connection; (status or 0, body or error) each."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:

        async def one() -> tuple[int, str]:
            try:
                async with session.get(url, headers={"Host": host}) as resp:
                    return resp.status, await resp.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                return 0, repr(exc)

        return list(await asyncio.gather(*(one() for _ in range(count))))
