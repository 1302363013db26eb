"""The fork server that starts local pods' processes: a child of `serving up` that has imported the
queue-proxy forks each queue-proxy (no interpreter start, no imports) and forks + execs each user container,
so that starting a pod never blocks the controller's event loop on fork and exec. This module is the
`serving up` end (a `Launcher`); the server's own process is `controller.local.runtime.forkhost`.

Protocol: one SOCK_SEQPACKET socketpair, one JSON object per message. `serving up` sends `{"id", "env",
"cwd"}` (and `"nice"`, added to the child's niceness, when not 0) plus `"args"` (run `serving ARGS` in the
fork) or `"exec"` (an argv), with the log file's descriptor and the write end of an announce pipe attached
(SCM_RIGHTS). The server answers `{"id", "pid"}` (for an exec, once exec succeeded: a close-on-exec pipe
tells) or `{"id", "errno", "strerror", "filename"}`, and `{"pid", "exit"}` when it reaps that child: the
server is the parent, and the code is the exit status or -N for death by signal N, as asyncio reports it.
One ordered socket carries both, so a child's exit never arrives before its pid.

Size: a message of up to 4 KB is the packet itself; a larger one (an environment of a thousand variables, an
error naming a long path) is written whole into a memfd that rides with a `{"payload": SIZE}` packet. Any
size goes through, bounded by memory only, and each message stays one atomic packet: no reassembly, no
interleaving of concurrent senders' pieces, no half message when either end dies, and the socket's queue
limits stay the only flow control. (A pipe would block its writer once 64 KB are unread, needing a reader at
the same time; a temporary file needs a directory and cleaning up; memfds are Linux's, as is the rest.) A
message that cannot be read (truncated, not JSON) ends the trust in that server: it is treated as lost.

Lifetime: the server ends at EOF on its socket (`serving up` closed it or died, which the kernel turns into
EOF too), after SIGKILLing every process it started. Nothing else ties a child to the server (no
PR_SET_PDEATHSIG), so a server lost while `serving up` runs (killed, crashed, or abandoned: killed first, so
that its EOF does not take its children along) costs no running pod: its children live on as orphans, whose
exits `serving up` learns through pidfds (the status only the lost parent could read: `EXIT_UNKNOWN`). The
next start launches a new server, which adopts the orphans' pidfds so that it kills them too at EOF; after
three losses, or off Linux, `serving up` starts processes itself. A request the server received but did not
answer when lost may have forked a child: the child writes its pid to the announce pipe first thing, so it
is tracked (not started twice); with no pid there, the pod starts the plain way. Forked queue-proxies share
the server's hash seed and whatever its modules read from the environment at import time (the server runs
with `serving up`'s environment, which every pod environment extends).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from controller.local.runtime.forkhost import PRELOADED, ProtocolError, pack, receive, send_packet
from controller.local.runtime.process import EXIT_UNKNOWN, Launcher, Process, ProcessSpec

log = logging.getLogger(__name__)

_ENTRY: Final = (sys.executable, "-m", "controller.cli")
_HOST: Final = ("-m", "controller.local.runtime.forkhost")
"""The server's interpreter arguments, before its socket's descriptor (tests swap in a misbehaving one)."""
_MAX_LOSSES: Final = 3
"""Servers lost before processes are exec'd by `serving up` again: one that keeps dying is not restarted."""
_ANNOUNCE_TIMEOUT: Final = 5.0
"""Seconds to wait for the pid of a child forked for a request a lost server left unanswered: it writes it
first thing after fork, so this only bounds a child that is stopped or starved."""


class _Lost(ConnectionError):
    """The server went away (or was abandoned) before answering."""


def forkable(spec: ProcessSpec) -> list[str] | None:
    """The `serving` arguments of a spec the server can run (`["queue-proxy"]`), else None."""
    argv = spec.argv
    if argv[: len(_ENTRY)] == _ENTRY and len(argv) > len(_ENTRY) and argv[len(_ENTRY)] in PRELOADED:
        return list(argv[len(_ENTRY) :])
    return None


class ForkedProcess:
    """A process the server started; its exit status arrives over the server's socket, or, once the
    server is lost, its exit (not its status) through a pidfd."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pidfd = -1

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def pidfd(self) -> int:
        """The pidfd watched since the server was lost, -1 before that and after the exit."""
        return self._pidfd

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
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if not self._exit.done():
            self._exit.set_result(code)

    def orphan(self) -> None:
        """Its server (the parent) is gone: watch for its exit through a pidfd (it polls readable then)."""
        if self._exit.done() or self._pidfd >= 0:
            return
        try:
            self._pidfd = os.pidfd_open(self._pid)
        except ProcessLookupError:  # it exited with the server, which never said so
            self.exited(EXIT_UNKNOWN)
        except OSError as exc:  # out of descriptors, say: a process no one can follow is stopped
            log.warning("pid %d cannot be followed without its fork server (%s); killing it", self._pid, exc)
            self.signal(signal.SIGKILL)
            self.exited(-signal.SIGKILL)
        else:
            asyncio.get_running_loop().add_reader(self._pidfd, self.exited, EXIT_UNKNOWN)


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
        """The running server's children, by pid, until it reports their exit."""
        self._orphans: list[ForkedProcess] = []
        """Processes started by servers lost since (those that exited are dropped now and then)."""
        self._connecting = asyncio.Lock()
        """Held while a server starts, so that concurrent starts after a loss start one server."""
        self._sending = asyncio.Lock()
        """Held by a sender waiting for room on the socket: the loop keeps one writer callback per socket."""
        self._writable: asyncio.Future[None] | None = None
        self._losses = 0
        self._disabled = "" if sys.platform.startswith("linux") else "the fork server needs Linux"
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
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        announce, child_end = os.pipe()
        reply: asyncio.Future[ForkedProcess] = asyncio.get_running_loop().create_future()
        self._pending[request["id"]] = reply
        try:
            try:
                with spec.log_path.open("ab") as out:
                    await self._send(request, (out.fileno(), child_end))
            finally:
                os.close(child_end)
            return await reply
        except _Lost:  # the server went away: the child it forked if any, else the plain way
            child = await self._announced(announce)
            return child if child is not None else await self._fallback.start(spec)
        finally:
            os.close(announce)
            self._pending.pop(request["id"], None)

    async def open(self) -> None:
        """Start the server now rather than at the first queue-proxy, so its imports are done by then."""
        await self._connect()

    async def close(self, grace: float = 2.0) -> None:
        """Stop every process started through servers (SIGKILL: `serving up` stops its pods before), this
        server's and lost ones', and the server, and wait for the server to exit."""
        self._closed = True
        server = self._server
        for child in [*self._children.values(), *self._orphans]:
            if child.returncode is None:
                child.signal(signal.SIGKILL)
                child.exited(-signal.SIGKILL)
        self._children.clear()
        self._orphans.clear()
        self._lost("was closed")  # EOF: the server kills what it started too, then exits
        if server is not None:
            try:
                await asyncio.wait_for(server.wait(), grace)
            except TimeoutError:
                server.kill()
                await server.wait()

    async def _connect(self) -> bool:
        """Whether a server is running, starting one if needed (it adopts the orphans of lost ones)."""
        async with self._connecting:
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
                        *_HOST,
                        str(theirs.fileno()),
                        pass_fds=(theirs.fileno(),),
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=out,
                        stderr=asyncio.subprocess.STDOUT,
                        start_new_session=True,
                    )
            except OSError as exc:
                ours.close()
                self._disable(f"it could not start: {exc}")
                return False
            finally:
                theirs.close()
            if self._closed:  # closed while it started: EOF makes it exit
                ours.close()
                self._server = None
                return False
            ours.setblocking(False)
            self._sock = ours
            asyncio.get_running_loop().add_reader(ours, self._receive)
            log.info("fork server %d started for queue-proxies", self._server.pid)
            self._orphans = [o for o in self._orphans if o.returncode is None]
            try:
                for orphan in list(self._orphans):
                    if orphan.pidfd < 0:
                        continue
                    pidfd = os.dup(orphan.pidfd)  # its own closes when it exits, maybe during the send
                    try:
                        await self._send({"adopt": orphan.pid}, (pidfd,))
                    finally:
                        os.close(pidfd)
            except _Lost:  # it died at once: this start goes the plain way
                return False
            return True

    async def _send(self, message: dict[str, Any], fds: Sequence[int]) -> None:
        """Send one message, waiting while the socket is full; `_Lost` once the server is gone. Any other
        OSError (no memory for a large message's memfd, say) concerns this message alone."""
        packet, payload = pack(message)
        attached = [*fds, payload] if payload >= 0 else list(fds)
        try:
            async with self._sending:
                while True:
                    sock = self._sock
                    if sock is None:
                        raise _Lost("fork server is gone")
                    try:
                        send_packet(sock, packet, attached)
                        return
                    except BlockingIOError:
                        await self._until_writable(sock)
                    except ConnectionError as exc:
                        self._lost("closed its socket")
                        raise _Lost("fork server is gone") from exc
        finally:
            if payload >= 0:
                os.close(payload)

    async def _until_writable(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        writable = self._writable = loop.create_future()

        def ready() -> None:
            loop.remove_writer(sock)
            _resolve(writable)

        loop.add_writer(sock, ready)
        try:
            await writable
        finally:
            self._writable = None
            if self._sock is sock:
                loop.remove_writer(sock)

    async def _announced(self, pipe: int) -> ForkedProcess | None:
        """The child forked for a request the lost server left unanswered, by the pid it wrote to the
        announce pipe (kept, as an orphan); None if there was no fork."""
        try:
            async with asyncio.timeout(_ANNOUNCE_TIMEOUT):
                data = await _read_until_eof(pipe)
        except TimeoutError:
            log.warning("no word from a request the lost fork server received; starting it the plain way")
            data = b""
        if not data.isdigit():
            return None
        child = ForkedProcess(int(data))
        if self._closed:
            child.signal(signal.SIGKILL)
            return None
        log.info("pid %d was started by a fork server lost before it answered; it keeps running", child.pid)
        child.orphan()
        self._orphans.append(child)
        return child

    def _receive(self) -> None:
        while self._sock is not None:
            try:
                message, fds = receive(self._sock)
            except BlockingIOError:
                return
            except ProtocolError as exc:
                self._lost(f"sent a message that cannot be read ({exc})")
                return
            except OSError:
                message, fds = None, []
            for fd in fds:  # none is expected
                os.close(fd)
            if message is None:
                self._lost("exited")
                return
            try:
                self._handle(message)
            except (KeyError, TypeError) as exc:
                self._lost(f"sent a message that cannot be read (bad field {exc})")
                return

    def _handle(self, message: dict[str, Any]) -> None:
        if "exit" in message:
            child = self._children.pop(_int(message, "pid"), None)
            if child is not None:
                child.exited(_int(message, "exit"))
            return
        reply = self._pending.get(_int(message, "id"))
        if "pid" in message:
            child = ForkedProcess(_int(message, "pid"))
            self._children[child.pid] = child
            if reply is not None and not reply.done():
                reply.set_result(child)
        elif reply is not None and not reply.done():
            reply.set_exception(OSError(message["errno"], message["strerror"], message["filename"]))

    def _lost(self, reason: str) -> None:
        """The server is gone, or no longer trusted (then killed first, so that its EOF does not kill its
        children): its children run on as orphans, pending starts fail over."""
        sock = self._sock
        if sock is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock)
        loop.remove_writer(sock)
        server, self._server, self._sock = self._server, None, None
        if not self._closed:
            if server is not None and server.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    server.kill()
            self._losses += 1
            log.warning(
                "fork server %s %s; the %d processes it started keep running",
                server.pid if server is not None else "?",
                reason,
                len(self._children),
            )
            if self._losses >= _MAX_LOSSES:
                self._disable(f"it was lost {self._losses} times")
        sock.close()
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(_Lost("fork server is gone"))
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(_Lost(f"fork server {reason}"))
        for child in self._children.values():
            child.orphan()
            self._orphans.append(child)
        self._children.clear()

    def _disable(self, reason: str) -> None:
        if not self._disabled:
            self._disabled = reason
            log.warning("fork server not used (%s): pod processes start from serving up itself", reason)


def _int(message: dict[str, Any], key: str) -> int:
    value = message[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(key)
    return value


async def _read_until_eof(fd: int) -> bytes:
    """What is written to pipe `fd` until every writer has closed it."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 64)
        except BlockingIOError:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _resolve, readable)
            try:
                await readable
            finally:
                loop.remove_reader(fd)
            continue
        if not chunk:
            return data
        data += chunk


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
