"""The fork server's own process: started by `serving up` (`python -m controller.forkhost FD`), it imports the
queue-proxy once, then forks a queue-proxy or forks + execs a user container for each request on its socket
and reports each child's exit; `controller.forkserver` is the other end and documents the protocol.

Single-threaded and loop-free, so that a forked child starts its own event loop from a clean slate.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import logging
import os
import random
import selectors
import signal
import socket
import sys
import traceback
from typing import Any, Final, NoReturn

from controller import cli
from controller.process import die_with_parent

PRELOADED: Final = ("queue-proxy",)
"""`serving` subcommands whose modules the server imports before forking, and that it runs."""
MAX_PACKET: Final = 1 << 20
"""Largest message, bytes: an environment is a few kilobytes."""


class _Server:
    """Serves the one `serving up` at the other end of `sock` until it closes it (or dies)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._children: set[int] = set()
        self._execs: dict[int, tuple[int, int]] = {}
        """Exec-status pipe -> (request id, pid) of an exec'd child whose start is not yet answered."""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)

    def serve(self) -> int:
        while True:
            for key, _ in self._selector.select():
                if key.fileobj == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self._wake_r, 512):
                            pass
                    self._reap()
                elif key.fileobj != self._sock:
                    if key.fd in self._execs:  # else answered by `_reap` earlier in this batch
                        self._exec_done(key.fd)
                elif not self._request():
                    for pid in self._children:
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(pid, signal.SIGKILL)
                    return 0

    def _request(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self._sock, MAX_PACKET, 1)
        except ConnectionError:
            return False
        try:
            if not data:
                return False
            request = json.loads(data)
            try:
                os.stat(request["cwd"])
                pid = self._fork(request, fds[0])
            except OSError as exc:
                self._reply(_error(request["id"], exc.errno, exc.strerror, exc.filename))
            else:
                self._children.add(pid)
                if "args" in request:
                    self._reply({"id": request["id"], "pid": pid})
            return True
        finally:
            for fd in fds:
                os.close(fd)

    def _exec_done(self, fd: int) -> bool:
        """Answer an exec'd child's start: its pid once exec closed the pipe, else the error it wrote."""
        try:
            data = os.read(fd, MAX_PACKET)
        except BlockingIOError:  # a stale event for a reused descriptor: still running exec
            return True
        request_id, pid = self._execs.pop(fd)
        self._selector.unregister(fd)
        os.close(fd)
        if data:
            self._reply({**json.loads(data), "id": request_id})
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
            pipe = next((fd for fd, (_, child) in self._execs.items() if child == pid), None)
            if pipe is not None and not self._exec_done(pipe):  # its start failed: no pid was given out
                continue
            self._reply({"pid": pid, "exit": os.waitstatus_to_exitcode(status)})

    def _reply(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # `serving up` is gone: the next read sees EOF
            self._sock.send(json.dumps(message).encode())

    def _fork(self, request: dict[str, Any], log_fd: int) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        status_r, status_w = os.pipe() if "exec" in request else (-1, -1)
        pid = os.fork()
        if pid == 0:
            self._detach(request, log_fd, parent, status_w)
            if status_w >= 0:
                _exec(request, status_w)
            _run(request)
        if status_r >= 0:
            os.close(status_w)
            os.set_blocking(status_r, False)
            self._execs[status_r] = (request["id"], pid)
            self._selector.register(status_r, selectors.EVENT_READ)
        return pid

    def _detach(self, request: dict[str, Any], log_fd: int, parent: int, keep: int) -> None:
        """In the child: own session, death with the server, stdio to the log, no fd of the server's but
        `keep`, the request's cwd and environment, the signal state a new interpreter has."""
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.setsid()
            die_with_parent()
            if os.getppid() != parent:  # the server died before the request above took effect
                os._exit(1)
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


def _error(request_id: int, errno: int | None, strerror: str | None, filename: str | None) -> dict[str, Any]:
    return {"id": request_id, "errno": errno, "strerror": strerror, "filename": filename}


def _exec(request: dict[str, Any], status: int) -> NoReturn:
    """Replace the child with the request's program (PATH looked up in its environment, as subprocess does);
    a failure goes back to the server through the close-on-exec `status` pipe."""
    argv = request["exec"]
    try:
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # ignored by Python, default for any other program
            signal.signal(sig, signal.SIG_DFL)
        os.execvpe(argv[0], argv, os.environ)
    except OSError as exc:
        with contextlib.suppress(OSError):  # named after the program, as subprocess names it
            os.write(status, json.dumps(_error(0, exc.errno, exc.strerror, argv[0])).encode())
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
        print("usage: python -m controller.forkserver SOCKET_FD  (started by `serving up`)", file=sys.stderr)
        return 2
    sock = socket.socket(fileno=int(argv[0]))
    for command in PRELOADED:
        importlib.import_module(cli.COMMANDS[command][0])
    gc.freeze()  # imported objects stay out of the collector's way: fewer pages copied into each child
    return _Server(sock).serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
