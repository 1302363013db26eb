"""The fork server that starts local pods' processes: a child of `serving up` that has imported the
queue-proxy forks each queue-proxy (no interpreter start, no imports) and forks + execs each user container,
so that starting a pod never blocks the controller's event loop on fork and exec. This module is the
`serving up` end (a `Launcher`); the server's own process is `controller.forkhost`.

Protocol: one SOCK_SEQPACKET socketpair, one JSON object per packet. `serving up` sends `{"id", "env", "cwd"}`
(and `"nice"`, added to the child's niceness, when not 0) plus `"args"` (run `serving ARGS` in the fork) or
`"exec"` (an argv), with the log file's descriptor attached (SCM_RIGHTS). The server answers `{"id", "pid"}`
(for an exec, once exec succeeded: a close-on-exec pipe tells) or `{"id", "errno", "strerror", "filename"}`,
and `{"pid", "exit"}` when it reaps that child: the server is the parent, and the code is the exit status or
-N for death by signal N, as asyncio reports it.
One ordered socket carries both, so a child's exit never arrives before its pid.

Lifetime: the server ends at EOF on its socket (`serving up` closed it or died), after SIGKILLing every child
still running; it gets SIGKILL when `serving up` dies (PR_SET_PDEATHSIG), and each child asks for SIGKILL when
the server dies. So a lost server takes its pods' processes with it: they are reported killed by SIGKILL,
their pods get replaced, and the next start launches a new server (after three losses, or off Linux, where
there is no PR_SET_PDEATHSIG, `serving up` starts processes itself). Forked queue-proxies share the server's
hash seed and whatever its modules read from the environment at import time (the server runs with
`serving up`'s environment, which every pod environment extends).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Final

from controller.forkhost import MAX_PACKET, PRELOADED
from controller.process import Launcher, Process, ProcessSpec, die_with_parent

log = logging.getLogger(__name__)

_ENTRY: Final = (sys.executable, "-m", "controller.cli")
_MAX_LOSSES: Final = 3
"""Servers lost before processes are exec'd by `serving up` again: a server that cannot run costs 3 pods."""


def forkable(spec: ProcessSpec) -> list[str] | None:
    """The `serving` arguments of a spec the server can run (`["queue-proxy"]`), else None."""
    argv = spec.argv
    if argv[: len(_ENTRY)] == _ENTRY and len(argv) > len(_ENTRY) and argv[len(_ENTRY)] in PRELOADED:
        return list(argv[len(_ENTRY) :])
    return None


class ForkedProcess:
    """A queue-proxy forked by the server; its exit status arrives over the server's socket."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._exit.result() if self._exit.done() else None

    async def wait(self) -> int:
        # Shielded: a cancelled waiter must not cancel the exit status for the next one.
        return await asyncio.shield(self._exit)

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pid, sig)

    def exited(self, code: int) -> None:
        if not self._exit.done():
            self._exit.set_result(code)


class ForkServer:
    """A `Launcher`: queue-proxies are forked by the server and other programs exec'd by it (started by
    `open` or on first use); everything goes to `fallback` once the server cannot be used."""

    def __init__(self, log_path: Path, fallback: Launcher) -> None:
        self._log_path = log_path
        self._fallback = fallback
        self._server: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[ForkedProcess]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._losses = 0
        self._disabled = "" if sys.platform.startswith("linux") else "PR_SET_PDEATHSIG is Linux-only"
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The running server's pid, None while there is none."""
        return self._server.pid if self._server is not None else None

    async def start(self, spec: ProcessSpec) -> Process:
        args = forkable(spec)
        if not spec.argv or self._closed or not await self._connect():
            return await self._fallback.start(spec)
        request: dict[str, Any] = {"id": next(self._ids), "env": spec.env, "cwd": str(spec.cwd)}
        if spec.nice:
            request["nice"] = spec.nice
        request["args" if args is not None else "exec"] = args if args is not None else list(spec.argv)
        reply: asyncio.Future[ForkedProcess] = asyncio.get_running_loop().create_future()
        self._pending[request["id"]] = reply
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with spec.log_path.open("ab") as out:
                await self._send(json.dumps(request).encode(), out.fileno())
            return await reply
        except ConnectionError:  # the server went away: this pod is started the plain way
            return await self._fallback.start(spec)
        finally:
            self._pending.pop(request["id"], None)

    async def open(self) -> None:
        """Start the server now rather than at the first queue-proxy, so its imports are done by then."""
        await self._connect()

    async def close(self, grace: float = 2.0) -> None:
        """Stop the server (it SIGKILLs what it forked that is still running) and wait for it to exit."""
        self._closed = True
        server = self._server
        self._lost()
        if server is not None:
            try:
                await asyncio.wait_for(server.wait(), grace)
            except TimeoutError:
                server.kill()
                await server.wait()

    async def _connect(self) -> bool:
        """Whether a server is running, starting one if needed."""
        if self._sock is not None:
            return True
        if self._disabled:
            return False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            with self._log_path.open("ab") as out:
                self._server = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "controller.forkhost",
                    str(theirs.fileno()),
                    pass_fds=(theirs.fileno(),),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )
        except OSError as exc:
            ours.close()
            self._disable(f"it could not start: {exc}")
            return False
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        asyncio.get_running_loop().add_reader(ours, self._receive)
        log.info("fork server %d started for queue-proxies", self._server.pid)
        return True

    async def _send(self, data: bytes, fd: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._sock is None:
                raise ConnectionError("fork server is gone")
            try:
                socket.send_fds(self._sock, [data], [fd])
                return
            except BlockingIOError:
                writable = loop.create_future()
                sock = self._sock
                loop.add_writer(sock, writable.set_result, None)
                try:
                    await writable
                finally:
                    loop.remove_writer(sock)
            except OSError as exc:
                self._lost()
                raise ConnectionError("fork server is gone") from exc

    def _receive(self) -> None:
        while self._sock is not None:
            try:
                data = self._sock.recv(MAX_PACKET)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            self._handle(json.loads(data))

    def _handle(self, message: dict[str, Any]) -> None:
        if "exit" in message:
            child = self._children.pop(message["pid"], None)
            if child is not None:
                child.exited(message["exit"])
            return
        reply = self._pending.get(message["id"])
        if "pid" in message:
            child = ForkedProcess(message["pid"])
            self._children[child.pid] = child
            if reply is not None and not reply.done():
                reply.set_result(child)
        elif reply is not None and not reply.done():
            reply.set_exception(OSError(message["errno"], message["strerror"], message["filename"]))

    def _lost(self) -> None:
        """The socket is closed: pending starts fail over to the fallback, forked children are killed."""
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock)
            self._sock.close()
            self._sock = None
            self._server = None
            if not self._closed:
                self._losses += 1
                log.warning("fork server exited; the pod processes it started were killed with it")
                if self._losses >= _MAX_LOSSES:
                    self._disable(f"it exited {self._losses} times")
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(ConnectionError("fork server is gone"))
        for child in self._children.values():
            child.signal(
                signal.SIGKILL
            )  # already dead by PR_SET_PDEATHSIG unless the server is still exiting
            child.exited(-signal.SIGKILL)
        self._children.clear()

    def _disable(self, reason: str) -> None:
        if not self._disabled:
            self._disabled = reason
            log.warning("fork server not used (%s): pod processes start from serving up itself", reason)
