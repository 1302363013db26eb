"""The system under test as real processes: `serving up` on the benchmark's Service files, and a bare app."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bench.system.service import BENCHAPP_MODULE, path_first
from controller.local.runtime.port import PortAllocator
from controller.local.runtime.process import OsLauncher, Process, ProcessSpec, describe_exit, stop
from controller.local.view import statefile

log = logging.getLogger(__name__)

_POLL = 0.1


class StackError(Exception):
    """The system under test did not start, or did not reach the state a scenario needs, in time."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class LocalSystem:
    """One `serving up` process on `files` (plus `args`); `status()` reads the document that
    `serving status --json` prints.

    Each gets its own state dir inside the run folder (its `up.json` names the ingress, control and platform
    URLs; pod logs land beside it), an ingress on a free port, and is stopped with SIGTERM (then SIGKILL) when
    the scenario ends, so runs never share state or ports.
    """

    def __init__(
        self,
        files: Sequence[Path],
        workdir: Path,
        session: aiohttp.ClientSession,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        ports: PortAllocator | None = None,
    ) -> None:
        self.files = [f.absolute() for f in files]
        self.state_dir = workdir / "serving-up"
        self.log_path = workdir / "serving-up.log"
        self._session = session
        self._args = tuple(args)
        self._env = path_first({**os.environ, **(env or {})})
        self._ports = ports or PortAllocator()
        self._process: Process | None = None
        self.state: statefile.UpState | None = None
        self.ingress_port = 0

    @property
    def control_url(self) -> str:
        assert self.state is not None
        return self.state.control_url

    @property
    def platform_url(self) -> str:
        assert self.state is not None
        return self.state.platform_url

    async def start(self, within: float = 120.0) -> None:
        """Start `serving up` and wait until its state file names live URLs and its status answers."""
        self.ingress_port = self._ports.allocate()
        argv = (
            sys.executable,
            "-m",
            "controller.cli",
            "up",
            *map(str, self.files),
            "--port",
            str(self.ingress_port),
            "--state-dir",
            str(self.state_dir),
            "--no-live",
            *self._args,
        )
        spec = ProcessSpec(argv=argv, env=self._env, cwd=self.state_dir.parent, log_path=self.log_path)
        self._process = await OsLauncher().start(spec)
        deadline = time.monotonic() + within
        while True:
            if self._process.returncode is not None:
                raise StackError(
                    f"serving up exited ({describe_exit(self._process.returncode)}):\n{_tail(self.log_path)}"
                )
            self.state = statefile.read(self.state_dir)
            if self.state is not None:
                try:
                    await self.status()
                    break
                except (aiohttp.ClientError, TimeoutError):
                    pass
            if time.monotonic() > deadline:
                raise StackError(f"serving up did not come up in {within:.0f}s:\n{_tail(self.log_path)}")
            await asyncio.sleep(_POLL)
        port = urlsplit(self.state.ingress_url).port
        if port is not None:
            self.ingress_port = port

    async def status(self) -> dict[str, Any]:
        url = self.control_url.rstrip("/") + "/status"
        async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            resp.raise_for_status()
            data: dict[str, Any] = await resp.json()
            return data

    async def wait_for(
        self, what: str, predicate: Callable[[dict[str, Any]], bool], within: float = 120.0
    ) -> dict[str, Any]:
        """Poll the status until `predicate` holds; StackError naming `what` after `within` seconds."""
        deadline = time.monotonic() + within
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self._process is not None and self._process.returncode is not None:
                raise StackError(f"serving up exited while waiting for {what}:\n{_tail(self.log_path)}")
            try:
                last = await self.status()
            except (aiohttp.ClientError, TimeoutError):
                pass
            else:
                if predicate(last):
                    return last
            await asyncio.sleep(0.2)
        raise StackError(f"timed out after {within:.0f}s waiting for {what}; last status: {last}")

    async def stop(self, grace: float = 30.0) -> None:
        if self._process is not None and self._process.returncode is None:
            await stop(self._process, grace)
        self._process = None
        self._ports.release(self.ingress_port)


def revisions(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every revision in a status document by name."""
    return {str(r["name"]): r for s in status.get("services", []) for r in s.get("revisions", [])}


def services(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(s["name"]): s for s in status.get("services", [])}


def latest(status: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The newest revision of Service `name` in a status document (revisions are listed newest first)."""
    svc = services(status).get(name)
    if svc is None or not svc.get("revisions"):
        return None
    rev: dict[str, Any] = svc["revisions"][0]
    return rev


def at_zero(status: Mapping[str, Any], names: Sequence[str]) -> bool:
    """Every named Service's revision was scaled to zero by the autoscaler and has no pod left."""
    for name in names:
        rev = latest(status, name)
        if rev is None:
            return False
        if rev.get("autoscaler_desired_pods") != 0 or rev.get("actual_pods") or rev.get("terminating_pods"):
            return False
    return True


def all_ready(status: Mapping[str, Any], names: Sequence[str], pods: int = 1) -> bool:
    """Every named Service's newest revision has at least `pods` ready pods."""
    for name in names:
        rev = latest(status, name)
        if rev is None or int(rev.get("ready_pods", 0)) < pods:
            return False
    return True


class BareApp:
    """The benchmark app as a plain process on a free port, for the direct (no proxy) path."""

    def __init__(self, workdir: Path, env: Mapping[str, str], name: str = "app") -> None:
        self.port = PortAllocator().allocate()
        self.log_path = workdir / f"{name}.log"
        self._env = {**os.environ, **env, "PORT": str(self.port)}
        self._process: Process | None = None

    async def start(self, within: float = 30.0) -> None:
        spec = ProcessSpec(
            argv=(sys.executable, "-m", BENCHAPP_MODULE),
            env=self._env,
            cwd=self.log_path.parent,
            log_path=self.log_path,
        )
        self._process = await OsLauncher().start(spec)
        deadline = time.monotonic() + within
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if self._process.returncode is not None or time.monotonic() > deadline:
                    raise StackError(f"the app did not start:\n{_tail(self.log_path)}") from None
                await asyncio.sleep(_POLL)
            else:
                writer.close()
                await writer.wait_closed()
                return

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            await stop(self._process, 10.0)
        self._process = None
