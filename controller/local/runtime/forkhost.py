"""The fork server's own process: started by `serving up` (`python -m controller.local.runtime.forkhost FD`),
it imports the queue-proxy once, then forks a queue-proxy or forks + execs a user container for each request
on its socket and reports each child's exit; `controller.local.runtime.forkserver` is the other end and
documents the protocol, whose framing (`pack`, `send_packet`, `receive`) both ends share from here.

Single-threaded and loop-free, so that a forked child starts its own event loop from a clean slate.
"""

from __future__ import annotations

import array
import contextlib
import errno
import gc
import importlib
import json
import logging
import os
import random
import select
import selectors
import signal
import socket
import sys
import traceback
from collections.abc import Sequence
from typing import Any, Final, NoReturn

from controller import cli

PRELOADED: Final = ("queue-proxy",)
"""`serving` subcommands whose modules the server imports before forking, and that it runs."""
INLINE_MAX: Final = 4096
"""Largest message sent as the packet itself, bytes: below the smallest send buffer Linux allows
(SOCK_MIN_SNDBUF, about 4.6 KB), so that a packet always fits whatever the sysctls say."""
_MAX_FDS: Final = 4
"""Most descriptors one packet carries: a request's log and announce pipe, plus a payload memfd."""
_STATUS_MAX: Final = 512
"""Largest exec-failure note a child writes to its status pipe, bytes: `[errno, strerror]`, well under
PIPE_BUF (4 KB), so that it is written and read in one piece."""


class ProtocolError(Exception):
    """A message that cannot be read: truncated, not a JSON object, its payload short or missing."""


def pack(message: dict[str, Any]) -> tuple[bytes, int]:
    """The packet that carries `message`, and -1 or a memfd the caller sends last among the packet's
    descriptors and then closes: a message larger than `INLINE_MAX` is written whole into a memfd, and the
    packet only says `{"payload": SIZE}`. Raises OSError (no memory, no descriptor) for this message only."""
    data = json.dumps(message).encode()
    if len(data) <= INLINE_MAX:
        return data, -1
    payload = os.memfd_create("forkserver-message", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(payload, view) :]
    except BaseException:
        os.close(payload)
        raise
    return json.dumps({"payload": len(data)}).encode(), payload


def send_packet(sock: socket.socket, packet: bytes, fds: Sequence[int]) -> None:
    """One packet with `fds` attached (SCM_RIGHTS)."""
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([packet], ancillary)


def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """The next message (None at EOF) and the descriptors it carried, which the caller closes; the payload
    memfd of a large message is read and closed here. Raises ProtocolError (its descriptors closed) for a
    message that cannot be read, BlockingIOError when a non-blocking socket has none."""
    data, ancillary, flags, _ = sock.recvmsg(
        INLINE_MAX, socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize), socket.MSG_CMSG_CLOEXEC
    )
    fds = array.array("i")
    for level, kind, fd_data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(fd_data[: len(fd_data) - len(fd_data) % fds.itemsize])
    received = list(fds)
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ProtocolError("a packet was truncated")
        if not data:
            return None, received
        message = _object(data)
        if "payload" in message:
            if not received or not isinstance(message["payload"], int):
                raise ProtocolError("a payload packet without its memfd")
            message = _object(_read_payload(received.pop(), message["payload"]))
        return message, received
    except BaseException:
        for fd in received:
            os.close(fd)
        raise


def _object(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"a message is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message is not a JSON object")
    return message


def _read_payload(fd: int, size: int) -> bytes:
    """`size` bytes from the start of memfd `fd`, which is closed."""
    try:
        data = b""
        while len(data) < size:
            chunk = os.pread(fd, size - len(data), len(data))
            if not chunk:
                raise ProtocolError(f"a payload has {len(data)} of its {size} bytes")
            data += chunk
        return data
    finally:
        os.close(fd)


class _Closed(Exception):
    """EOF on the socket: `serving up` closed it (stopping) or died."""


class _Server:
    """Serves the one `serving up` at the other end of `sock` until it closes it (or dies)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._children: set[int] = set()
        self._execs: dict[int, tuple[int, int, str]] = {}
        """Exec-status pipe -> (request id, pid, program) of an exec'd child not yet answered for."""
        self._adopted: dict[int, int] = {}
        """pid -> pidfd of each process an earlier, lost server started: killed with the children at EOF."""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ, self._request)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._signalled)

    def serve(self) -> int:
        """Serve until EOF, then SIGKILL every process started (0): `serving up` stopped or died. A message
        that cannot be read ends the server with its processes left running (1): `serving up` then treats
        it as lost and keeps track of them itself."""
        try:
            while True:
                for key, _ in self._selector.select():
                    key.data(key.fd)
        except _Closed:
            self._kill_all()
            return 0
        except ProtocolError as exc:
            print(f"fork server: {exc}; exiting, processes left running", file=sys.stderr, flush=True)
            return 1

    def _kill_all(self) -> None:
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        for pid, pidfd in self._adopted.items():
            if not _exited(pidfd):  # else its pid may name another process by now
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)

    def _signalled(self, _fd: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass
        self._reap()

    def _request(self, _fd: int) -> None:
        try:
            message, fds = receive(self._sock)
        except ConnectionError:
            raise _Closed from None
        try:
            if message is None:
                raise _Closed
            if "adopt" in message:
                if len(fds) != 1 or not isinstance(message["adopt"], int):
                    raise ProtocolError("an adoption without one pid and its pidfd")
                self._adopted[message["adopt"]] = fds.pop()
            else:
                self._start(message, fds)
        finally:
            for fd in fds:
                os.close(fd)

    def _start(self, request: dict[str, Any], fds: list[int]) -> None:
        if len(fds) != 2 or not isinstance(request.get("id"), int) or not isinstance(request.get("cwd"), str):
            raise ProtocolError("a request without its id, cwd, log and announce pipe")
        argv = request.get("exec")
        if argv is not None and (not isinstance(argv, list) or not argv or not isinstance(argv[0], str)):
            raise ProtocolError("a request to exec no program")
        try:
            os.stat(request["cwd"])
            self._fork(request, *fds)
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EINVAL
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._reply(_error(request["id"], code, reason, request["cwd"]))

    def _exec_done(self, fd: int) -> bool:
        """Answer an exec'd child's start: its pid once exec closed the pipe, else the error it wrote."""
        if fd not in self._execs:  # a stale event: answered by `_reap` earlier in this batch
            return True
        try:
            data = os.read(fd, _STATUS_MAX)
        except BlockingIOError:  # a stale event for a reused descriptor: still running exec
            return True
        request_id, pid, program = self._execs.pop(fd)
        self._selector.unregister(fd)
        os.close(fd)
        if data:
            code, reason = json.loads(data)
            self._reply(_error(request_id, code, reason, program))
            return False
        self._reply({"id": request_id, "pid": pid})
        return True

    def _reap(self) -> None:
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._children.discard(pid)
            pipe = next((fd for fd, (_, child, _) in self._execs.items() if child == pid), None)
            if pipe is not None and not self._exec_done(pipe):  # its start failed: no pid was given out
                continue
            self._reply({"pid": pid, "exit": os.waitstatus_to_exitcode(status)})

    def _reply(self, message: dict[str, Any]) -> None:
        """Send on the blocking socket (`serving up` always reads); any failure but the peer's going away
        ends the server, processes left running, rather than leave `serving up` waiting for an answer."""
        packet, payload = pack(message)
        try:
            send_packet(self._sock, packet, [payload] if payload >= 0 else [])
        except ConnectionError:  # `serving up` is gone: the next read sees EOF
            pass
        finally:
            if payload >= 0:
                os.close(payload)

    def _fork(self, request: dict[str, Any], log_fd: int, announce: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        status_r, status_w = os.pipe() if "exec" in request else (-1, -1)
        pid = os.fork()
        if pid == 0:
            self._detach(request, log_fd, announce, status_w)
            if status_w >= 0:
                _exec(request, status_w)
            _run(request)
        self._children.add(pid)
        if status_r < 0:
            self._reply({"id": request["id"], "pid": pid})
            return
        os.close(status_w)
        os.set_blocking(status_r, False)
        self._execs[status_r] = (request["id"], pid, request["exec"][0])
        self._selector.register(status_r, selectors.EVENT_READ, self._exec_done)

    def _detach(self, request: dict[str, Any], log_fd: int, announce: int, keep: int) -> None:
        """In the child: own session, its pid on the announce pipe, stdio to the log, no fd of the server's
        but `keep`, the request's cwd and environment, the signal state a new interpreter has.

        No PR_SET_PDEATHSIG: a running pod outlives a lost server. The pid goes straight to `serving up`,
        so that it knows this child even if the server dies before answering (after `setsid`, so that the
        pid names the process group too)."""
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.setsid()
            with contextlib.suppress(OSError):  # EPIPE: `serving up` had the answer and closed its end
                os.write(announce, str(os.getpid()).encode())
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            self._selector.close()
            self._sock.close()
            os.closerange(3, keep if keep >= 0 else _MAX_FD)
            os.closerange(max(keep + 1, 3), _MAX_FD)
            os.chdir(request["cwd"])
            if request.get("nice"):
                os.nice(request["nice"])
            os.environ.clear()
            os.environ.update(request["env"])
        except BaseException:  # the child's boundary: it must never return into the server's loop
            traceback.print_exc()
            os._exit(1)


_MAX_FD: Final = os.sysconf("SC_OPEN_MAX")


def _exited(pidfd: int) -> bool:
    """Whether the process behind `pidfd` has exited (the pidfd polls readable)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _error(request_id: int, code: int | None, reason: str | None, filename: str | None) -> dict[str, Any]:
    return {"id": request_id, "errno": code, "strerror": reason, "filename": filename}


def _exec(request: dict[str, Any], status: int) -> NoReturn:
    """Replace the child with the request's program (PATH looked up in its environment, as subprocess does);
    a failure goes back to the server through the close-on-exec `status` pipe, without the program's name
    (the server has it), so that the note stays small enough to be written in one piece."""
    argv = request["exec"]
    try:
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # ignored by Python, default for any other program
            signal.signal(sig, signal.SIG_DFL)
        os.execvpe(argv[0], argv, os.environ)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in an argument or variable
        code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EINVAL
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        with contextlib.suppress(OSError):
            os.write(status, json.dumps([code, reason[:200]]).encode())
    finally:
        os._exit(127)


def _run(request: dict[str, Any]) -> NoReturn:
    """Run `serving <args>` in the forked interpreter as a new process would after exec; never returns."""
    code = 1
    try:
        sys.argv = [cli.__file__, *request["args"]]
        random.seed()
        code = cli.main(request["args"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:  # the child's boundary: it must never return into the server's loop
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print(
            "usage: python -m controller.local.runtime.forkhost SOCKET_FD  (started by `serving up`)",
            file=sys.stderr,
        )
        return 2
    sock = socket.socket(fileno=int(argv[0]))
    for command in PRELOADED:
        importlib.import_module(cli.COMMANDS[command][0])
    gc.freeze()  # imported objects stay out of the collector's way: fewer pages copied into each child
    return _Server(sock).serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
