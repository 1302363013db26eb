"""Coverage-guided fuzzing of the forwarding engine's request path with atheris (libFuzzer).

    python benchmarks/fuzz_engine.py [libFuzzer flags: -runs=N -max_total_time=S ...] [corpus dir]

Each input is what one client sends to a proxy built on `serving.http` and, optionally, what the upstream
answers (the format is `Case`'s). It goes through the real engine: a server on 127.0.0.1 whose handler
forwards to a raw upstream that parses what it receives with a strict llhttp parser and answers as the input
says, all on one uvloop event loop kept across inputs. After each input, `EngineFault` is raised (libFuzzer
then reports a crash and saves the input) when any of these breaks:

- no exception reached the event loop's exception handler and the engine logged no error;
- what the proxy wrote back is a sequence of well-formed HTTP/1.1 responses, one per request at most (a
  response to HEAD has no body), or nothing, before it closed;
- a response the engine wrote on its own is a 4xx, or a 502/504 when the upstream misbehaved or was timed;
- no more responses were relayed than the upstream sent, and none carries hop-by-hop headers;
- the upstream received nothing its strict parser rejects, and no more requests than the client's bytes hold
  complete ones: the same methods, targets and bodies, in order (the smuggling property);
- every connection, task and file descriptor of the input is released afterwards.

Coverage comes from Python bytecode only, so the engine's modules are loaded from their sources and
instrumented, even where a compiled build (setup.py) left its extension modules beside them: those would
shadow the sources and give no coverage. Without a corpus directory a temporary one is seeded with requests
built here (`seeds`), and a dictionary of HTTP tokens is passed unless one is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final, cast

import httptools

ROOT: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The modules run from their sources under the fuzzer: the engine and the header rules it applies per request.
SOURCE_MODULES: Final = ("serving.http", "serving.header")
# Hand-written C among them (setup.py `NATIVE`): no source to instrument, so they run as built and the fuzzer
# feeds them the same inputs (a pure-Python build has none, and the engine uses its Python fallbacks).
NATIVE_MODULES: Final = ("serving.http._head",)


class SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the `.py` source of the modules under `names`, never an extension module built beside it.

    Python prefers an extension module to the source of the same name, and a compiled build keeps both in
    the package directory; the fuzzer needs the source, whose bytecode it can instrument.
    """

    def __init__(self, root: Path, names: Sequence[str]) -> None:
        self._root = root
        self._names = tuple(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not any(fullname == name or fullname.startswith(name + ".") for name in self._names):
            return None
        base = self._root.joinpath(*fullname.split("."))
        if (base / "__init__.py").is_file():
            return importlib.util.spec_from_file_location(
                fullname, base / "__init__.py", submodule_search_locations=[str(base)]
            )
        source = base.with_suffix(".py")
        if source.is_file():
            return importlib.util.spec_from_file_location(fullname, source)
        return None


def load_engine_from_sources() -> None:
    """Import the engine from its Python sources with coverage instrumentation, before anything else does.

    Exits with a message if a module still came from an extension (imported earlier, or no source found).
    """
    import atheris

    spec = importlib.util.find_spec("serving")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("fuzz_engine: the serving package is not importable (pip install -e '.[fuzz]')")
    root = Path(next(iter(spec.submodule_search_locations))).parent
    sys.meta_path.insert(0, SourceFinder(root, SOURCE_MODULES))
    with atheris.instrument_imports(include=["serving"]):
        importlib.import_module("serving.http")
    compiled = sorted(
        name
        for name, module in sys.modules.items()
        if name.startswith(SOURCE_MODULES)
        and name not in NATIVE_MODULES
        and not str(getattr(module, "__file__", "")).endswith(".py")
    )
    if compiled:
        raise SystemExit(
            f"fuzz_engine: {', '.join(compiled)} did not load from source, so it cannot be instrumented; "
            "reinstall pure Python with `SERVING_PURE_PYTHON=1 pip install -e .` and run again"
        )


if __name__ == "__main__":
    load_engine_from_sources()

from serving import header  # noqa: E402
from serving.http import Exchange, ForwardTimeouts, Server, ServerLimits, UpstreamPool, serve  # noqa: E402
from serving.http.h2base import PREFACE  # noqa: E402
from tests.unit.serving.http.rawhttp import RawClient, forwarder, raw_server  # noqa: E402
from tests.unit.serving.http.test_smuggling import Recorder, Seen, _Parse  # noqa: E402

# -- an input -----------------------------------------------------------------------------------------------

ANSWER: Final = b"\n#answer\n"  # starts an upstream answer (the first part of an input is the client's)
PAUSE: Final = b"\n#pause\n"  # splits the client's bytes into writes a moment apart
KEEP_OPEN: Final = 1  # flag: the upstream keeps its connection after its last scripted answer (else closes)
EARLY: Final = 2  # flag: the upstream answers once a request head has arrived, not the whole request
TIMED: Final = 4  # flag: forward with short response-start and idle timeouts
MAX_WRITES: Final = 8

OK: Final = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
OK_TO_HEAD: Final = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"


@dataclass(frozen=True)
class Case:
    """One fuzz input: a flags byte, the client's bytes (split into writes at `PAUSE`), then any number of
    upstream answers, each after `ANSWER`. Request i the upstream reads gets answer i, or a plain 200 once
    they run out; a delimiter keeps mutations of one part from shifting the others."""

    writes: tuple[bytes, ...]
    answers: tuple[bytes, ...] = ()
    keep_open: bool = False
    early: bool = False
    timed: bool = False

    @classmethod
    def decode(cls, data: bytes) -> Case:
        flags = data[0] if data else 0
        client, *answers = data[1:].split(ANSWER)
        writes = [w for w in client.split(PAUSE) if w]
        if len(writes) > MAX_WRITES:
            writes[MAX_WRITES - 1 :] = [b"".join(writes[MAX_WRITES - 1 :])]
        return cls(
            tuple(writes), tuple(answers), bool(flags & KEEP_OPEN), bool(flags & EARLY), bool(flags & TIMED)
        )

    def encode(self) -> bytes:
        flags = KEEP_OPEN * self.keep_open | EARLY * self.early | TIMED * self.timed
        return bytes([flags]) + PAUSE.join(self.writes) + b"".join(ANSWER + answer for answer in self.answers)

    @property
    def sent(self) -> bytes:
        return b"".join(self.writes)


# -- what the client sent, and what the upstream received ----------------------------------------------------


class ClientScan(_Parse):
    """The requests in the client's bytes as a strict llhttp parser frames them: what the engine may pass on.

    It only reads (it never answers, so it has no writer).
    """

    def __init__(self) -> None:
        super().__init__(Recorder(), cast("asyncio.StreamWriter", None))
        self.versions: list[str] = []
        self.begun = 0
        self.error = False
        self.upgrade = False

    @classmethod
    def of(cls, data: bytes) -> ClientScan:
        scan = cls()
        try:
            scan.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            scan.upgrade = True  # what follows the upgrade request is no HTTP
        except httptools.HttpParserError:
            scan.error = True
        return scan

    @property
    def requests(self) -> list[Seen]:
        """The complete requests, in order."""
        return self.recorder.requests

    @property
    def partial(self) -> bool:
        """Whether the bytes end inside a request (or in a malformed one)."""
        return self.begun > len(self.requests)

    def is_head(self, index: int) -> bool:
        """Whether request `index` is a HEAD; past the complete ones, the request cut short, if its head was
        read (as the engine knows it when it refuses one)."""
        if index < len(self.requests):
            return self.requests[index].method == "HEAD"
        cut_short = self.current if index == len(self.requests) and self.partial else None
        return cut_short is not None and cut_short.method == "HEAD"

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.begun += 1

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self.versions.append(self.parser.get_http_version())

    def on_message_complete(self) -> None:
        assert self.current is not None
        self.recorder.requests.append(self.current)


@dataclass
class Script:
    """The upstream's side of one input: what it answers, what it received, its open connections."""

    answers: tuple[bytes, ...]
    keep_open: bool
    early: bool
    recorder: Recorder = field(default_factory=Recorder)
    written: int = 0
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    def answer(self, writer: asyncio.StreamWriter, head_request: bool) -> bool:
        """Write the next answer; return whether the connection closes after it."""
        index = self.written
        self.written += 1
        if index < len(self.answers):
            writer.write(self.answers[index])
            return not self.keep_open and index == len(self.answers) - 1
        writer.write(OK_TO_HEAD if head_request else OK)
        return False


class UpstreamParse(_Parse):
    """One upstream connection: records each request a strict parser reads and answers it from the script."""

    def __init__(self, script: Script, writer: asyncio.StreamWriter) -> None:
        super().__init__(script.recorder, writer)
        self.script = script
        self.closed = False
        self.raw = False

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        assert self.current is not None
        hosts = sum(name == header.HOST for name, _ in self.current.headers)
        if hosts != 1:
            self.recorder.errors.append(f"{hosts} Host fields in {self.current.method} {self.current.target}")
        if self.script.early:
            self._answer()

    def on_message_complete(self) -> None:
        assert self.current is not None
        self.recorder.requests.append(self.current)
        if not self.script.early:
            self._answer()

    def _answer(self) -> None:
        if self.closed or self.current is None:
            return
        if self.script.answer(self.writer, self.current.method == "HEAD"):
            self.closed = True
            self.writer.close()


# -- what the proxy wrote back -------------------------------------------------------------------------------


class EngineFault(Exception):
    """An invariant of the engine broke for this input."""


RELAYED: Final = "x-fuzz-relayed"  # added by the harness's handler to every relayed response
_HOP_BY_HOP: Final = frozenset(name.encode() for name in header.HOP_BY_HOP | {header.APP_REFUSED}) - {
    b"connection",
    b"transfer-encoding",
}
_CONNECTION_VALUES: Final = frozenset({b"close", b"keep-alive"})


class _Message:
    """llhttp's reading of one response (or a prefix of one), fed to it alone."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_read = False
        self.completed = 0
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.head_read = True

    def on_message_complete(self) -> None:
        self.completed += 1

    def values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name]

    @classmethod
    def read(cls, data: bytes, *, whole: bool) -> _Message:
        """Parse `data`; with `whole`, it must be exactly one complete message."""
        message = cls()
        try:
            message.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            return message  # a 101: what follows is relayed raw
        except httptools.HttpParserError as exc:
            if message.head_read and message.parser.get_status_code() == 101:
                return message  # a 101 without Upgrade fields: llhttp pauses all the same, another way
            raise EngineFault(f"malformed response ({exc}): {data[:300]!r}") from None
        if whole and message.completed != 1:
            raise EngineFault(f"{message.completed} messages where one was framed: {data[:300]!r}")
        return message


@dataclass
class Reply:
    """A final response: its status, and whether it was relayed (or the engine's own)."""

    status: int
    relayed: bool


@dataclass
class Replies:
    """The final responses in the proxy's output (interim ones checked and skipped)."""

    finals: list[Reply] = field(default_factory=list)
    upgraded: bool = False  # a 101 went out: the rest is a raw relay
    incomplete: bool = False  # the output ends inside a response (cut off, or delimited by the close)


def chunked_end(data: bytes, at: int) -> int | None:
    """Where the chunked body starting at `at` ends (llhttp checks it afterwards); None: not all here."""
    while True:
        eol = data.find(b"\r\n", at)
        if eol == -1:
            return None
        size_text = data[at:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise EngineFault(f"bad chunk size line {data[at:eol]!r}") from None
        at = eol + 2
        if size == 0:
            break
        at += size + 2
        if at > len(data):
            return None
    while True:  # trailer section
        eol = data.find(b"\r\n", at)
        if eol == -1:
            return None
        if eol == at:
            return at + 2
        at = eol + 2


def read_replies(output: bytes, scan: ClientScan) -> Replies:
    """Split the proxy's output into responses, each checked by llhttp; a response answers request i in turn
    (a HEAD request's has no body). Raises `EngineFault` for anything malformed."""
    replies = Replies()
    at = 0
    while at < len(output):
        end = output.find(b"\r\n\r\n", at)
        if end == -1:
            _Message.read(output[at:], whole=False)
            replies.incomplete = True
            break
        body_at = end + 4
        head = _Message.read(output[at:body_at], whole=False)
        status = head.parser.get_status_code()
        if head.parser.get_http_version() != "1.1":
            raise EngineFault(f"not an HTTP/1.1 response: {output[at:body_at]!r}")
        relayed = bool(head.values(RELAYED.encode()))
        if status < 200 and status != 101:
            if status != 100 or relayed:
                raise EngineFault(f"interim response relayed or not 100: {output[at:body_at]!r}")
            at = body_at
            continue
        index = len(replies.finals)
        replies.finals.append(Reply(status, relayed))
        if relayed:
            check_relayed_head(head, status, output[at:body_at])
        if status == 101:
            if not (scan.upgrade and index == len(scan.requests) - 1):
                raise EngineFault("101 to a request that did not ask to upgrade")
            replies.upgraded = True
            break
        stop = _body_end(output, body_at, head, status, scan, index)
        if stop is None or stop > len(output):
            _Message.read(output[at:], whole=False)
            replies.incomplete = True
            break
        _Message.read(output[at:stop], whole=not scan.is_head(index))
        at = stop
    return replies


def _body_end(
    output: bytes, at: int, head: _Message, status: int, scan: ClientScan, index: int
) -> int | None:
    """Where the response whose body starts at `at` ends: None if it runs to the close (or is cut off)."""
    if status in (204, 304) or scan.is_head(index):
        return at
    codings = head.values(b"transfer-encoding")
    if codings and codings[-1].rsplit(b",", 1)[-1].strip().lower() == b"chunked":
        return chunked_end(output, at)
    lengths = head.values(b"content-length")
    if not codings and lengths:
        return at + int(lengths[0])
    if index >= len(scan.versions) or scan.versions[index] != "1.0":
        raise EngineFault(f"a response delimited by the close to an HTTP/1.1 request: {output[:300]!r}")
    return None


def check_relayed_head(head: _Message, status: int, raw: bytes) -> None:
    """A relayed head carries none of the upstream's hop-by-hop headers; the engine writes its own."""
    for name, value in head.headers:
        if name == b"connection":
            if value.lower() not in _CONNECTION_VALUES and not (
                status == 101 and value.lower() == b"upgrade"
            ):
                raise EngineFault(f"relayed Connection {value!r}: {raw!r}")
        elif name in _HOP_BY_HOP and not (status == 101 and name == b"upgrade"):
            raise EngineFault(f"relayed hop-by-hop {name!r}: {raw!r}")


def check_replies(replies: Replies, scan: ClientScan, case: Case, answers_sent: int) -> None:
    """At most one response per request (and one for a malformed rest), no more relayed than the upstream
    sent, and the engine's own answers are errors of the client's (or the upstream's) making, sent last."""
    finals = replies.finals
    allowed = len(scan.requests) + (scan.error or scan.partial)
    if len(finals) > allowed:
        raise EngineFault(f"{len(finals)} responses to {len(scan.requests)} complete requests")
    relayed = sum(reply.relayed for reply in finals)
    if relayed > answers_sent:
        raise EngineFault(f"{relayed} responses relayed but the upstream sent {answers_sent}")
    for index, reply in enumerate(finals):
        if reply.relayed:
            continue
        status = reply.status
        if not (400 <= status < 500 or (status == 502 and case.answers) or (status == 504 and case.timed)):
            raise EngineFault(f"the engine answered {status} on its own")
        if index != len(finals) - 1 or replies.incomplete:
            raise EngineFault(f"more output after the engine's own {status}")


def check_upstream(recorder: Recorder, scan: ClientScan) -> None:
    """The upstream parsed every byte it got, and got the client's complete requests at most, as sent."""
    if recorder.errors:
        raise EngineFault(f"the upstream's parser rejected what it received: {recorder.errors}")
    seen, sent = recorder.requests, scan.requests
    if len(seen) > len(sent):
        raise EngineFault(f"the upstream read {len(seen)} requests; the client sent {len(sent)}")
    for got, put in zip(seen, sent, strict=False):
        same_target = got.target == put.target or not put.target.startswith("/")
        if got.method != put.method or got.body != put.body or not same_target:
            raise EngineFault(
                f"the upstream read {got.method} {got.target} {got.body[:80]!r}, "
                f"the client sent {put.method} {put.target} {put.body[:80]!r}"
            )


# -- running one input ---------------------------------------------------------------------------------------

LIMITS: Final = ServerLimits(max_header_bytes=1024, max_headers=16)
TIMEOUTS: Final = ForwardTimeouts(response_start=0.02, idle=0.02)
UNTIMED: Final = ForwardTimeouts()
DEADLINE: Final = 0.1  # seconds an input's client waits at most for the proxy
SETTLE: Final = 0.005  # seconds the client waits for more after the answers its complete requests get
GAP: Final = 0.001  # seconds between the client's writes
RELEASE: Final = 5.0  # seconds the connections of an input get to close before it counts as a leak


class _Errors(logging.Handler):
    """Keeps the engine's error log records: it logs an error only for a bug of its own (or a handler's)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def open_fds() -> int:
    """File descriptors open in this process (-1 where /proc cannot tell)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


class Harness:
    """The engine and the scripted upstream on one event loop, kept across inputs."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.loop_errors: list[dict[str, Any]] = []
        self.log = _Errors()
        self.script = Script((), keep_open=False, early=False)
        self.forward = forwarder(UpstreamPool("127.0.0.1", 1))
        self._stack = contextlib.AsyncExitStack()
        self.server: Server | None = None
        self.upstream_port = 0
        self.fds = -1

    def start(self) -> None:
        self.loop.set_exception_handler(lambda _, context: self.loop_errors.append(context))
        engine_log = logging.getLogger("serving")
        engine_log.addHandler(self.log)
        engine_log.propagate = False  # its warnings (an upstream's failure left to the engine) are expected
        self.loop.run_until_complete(self._start())
        self.loop.run_until_complete(self.run(Case((b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",))))
        self.fds = self.loop.run_until_complete(self._open_fds())

    async def _open_fds(self) -> int:
        """The baseline: counted after one input and while the loop runs (uvloop opens a socket pair for
        signals for each run)."""
        return open_fds()

    async def _start(self) -> None:
        self.upstream_port = await self._stack.enter_async_context(raw_server(self._serve_upstream))

        async def handle(ex: Exchange) -> None:
            await self.forward(ex)

        self.server = await serve(handle, "127.0.0.1", 0, limits=LIMITS)

    def test_one_input(self, data: bytes) -> None:
        self.loop.run_until_complete(self.run(Case.decode(data)))

    async def run(self, case: Case) -> None:
        if case.sent.startswith(PREFACE):
            # The connection becomes HTTP/2: outside this HTTP/1.1 oracle (the frame path has its own tests).
            return
        scan = ClientScan.of(case.sent)
        script = self.script = Script(case.answers, case.keep_open, case.early)
        pool = UpstreamPool("127.0.0.1", self.upstream_port)
        timeouts = TIMEOUTS if case.timed else UNTIMED
        self.forward = forwarder(pool, timeouts=timeouts, response_headers=[(RELAYED, "1")])
        try:
            output = await self._client(case, scan)
        finally:
            await pool.close()
            self._reset_upstream()
        await self._released()
        self._check_quiet()
        check_upstream(script.recorder, scan)
        try:
            check_replies(read_replies(output, scan), scan, case, script.written)
        except EngineFault as fault:
            raise EngineFault(f"{fault}; the proxy wrote {output[:600]!r}") from None

    async def _client(self, case: Case, scan: ClientScan) -> bytes:
        """Send the client's bytes, read until the proxy closes (the client half-closes once its complete
        requests are answered) or the deadline passes; return what it read."""
        assert self.server is not None
        client = await RawClient.connect(self.server.port)
        output = bytearray()
        deadline = self.loop.time() + DEADLINE
        try:
            for i, data in enumerate(case.writes):
                if i:
                    await asyncio.sleep(GAP)
                if client.writer.is_closing():
                    break  # the proxy closed already (after an error answer, say)
                client.writer.write(data)
            last = self.loop.time()
            half_closed = False
            while (now := self.loop.time()) < deadline:
                try:
                    replies = read_replies(bytes(output), scan)
                except EngineFault:
                    break  # reported with the whole output once the input is over
                answered = len(replies.finals) >= len(scan.requests) and not replies.incomplete
                settled = not (scan.partial or scan.error) or now - last >= SETTLE
                if not half_closed and (replies.upgraded or (answered and settled)):
                    half_closed = True
                    with contextlib.suppress(OSError, RuntimeError):
                        client.writer.write_eof()
                wait = deadline - now if half_closed or not answered else SETTLE
                try:
                    data = await asyncio.wait_for(client.reader.read(65536), wait)
                except TimeoutError:
                    continue
                except ConnectionError:
                    break
                if not data:
                    break
                output += data
                last = self.loop.time()
        finally:
            with contextlib.suppress(OSError):  # a reset connection reports its error here
                await client.close()
        return bytes(output)

    async def _serve_upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = self.script
        script.writers.add(writer)
        conn = UpstreamParse(script, writer)
        try:
            while not conn.closed and (data := await reader.read(65536)):
                if conn.raw:
                    continue
                try:
                    conn.parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    conn.raw = True
                except httptools.HttpParserError as exc:
                    script.recorder.errors.append(f"{exc}: {data[:300]!r}")
                    return
        finally:
            script.writers.discard(writer)

    def _leaks(self) -> list[str]:
        assert self.server is not None
        leaks = []
        if self.server.connections:
            leaks.append(f"{self.server.connections} client connections")
        if self.script.writers:
            leaks.append(f"{len(self.script.writers)} upstream connections")
        tasks = [t for t in asyncio.all_tasks(self.loop) if t is not asyncio.current_task()]
        if tasks:
            leaks.append(f"{len(tasks)} tasks: {tasks[:3]}")
        fds = open_fds()
        if fds > self.fds >= 0:
            leaks.append(f"{fds - self.fds} file descriptors")
        return leaks

    def _reset_upstream(self) -> None:
        """Reset the upstream's connections: once the client has gone, whatever the engine still forwards
        (pipelined requests it has not seen the client leave behind) fails at once instead of waiting for an
        answer that will not come."""
        for writer in list(self.script.writers):
            writer.transport.abort()

    async def _released(self) -> None:
        """Wait until every connection, task and descriptor of the input is gone, or fail."""
        deadline = self.loop.time() + RELEASE
        spins = 0
        while leaks := self._leaks():
            self._reset_upstream()
            if self.loop.time() > deadline:
                raise EngineFault(f"not released {RELEASE:g}s after the input: {', '.join(leaks)}")
            spins += 1
            await asyncio.sleep(0 if spins < 20 else 0.001)

    def _check_quiet(self) -> None:
        if self.loop_errors:
            errors, self.loop_errors = self.loop_errors, []
            raise EngineFault(f"exception handler called: {errors}")
        if self.log.records:
            records, self.log.records = self.log.records, []
            raise EngineFault(f"the engine logged errors: {[self.log.format(r) for r in records]}")


# -- seeds, dictionary, main ---------------------------------------------------------------------------------


def seeds() -> list[Case]:
    """Exchanges of each kind the engine handles (valid ones, and upstreams that misbehave in common ways),
    for the fuzzer to start from."""
    get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    head = b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n"
    post = b"POST /p?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    chunked = (
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
    )
    upgrade = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nping"
    switched = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\npong"
    expect = b"PUT /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
    absolute = b"GET http://b.example/x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    to_the_close = b"HTTP/1.1 200 OK\r\n\r\nto the end"
    with_trailer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x\r\n\r\n2\r\nok\r\n0\r\nx: 1\r\n\r\n"
    )
    hop_by_hop = (
        b"HTTP/1.1 200 OK\r\nConnection: x-a\r\nX-A: 1\r\nKeep-Alive: 5\r\nContent-Length: 2\r\n\r\nok"
    )
    return [
        Case((get,)),
        Case((post,)),
        Case((chunked,)),
        Case((get + head + post,)),
        Case((upgrade,), (switched,)),
        Case((expect, b"abc"), (b"HTTP/1.1 100 Continue\r\n\r\n" + OK,), keep_open=True),
        Case((absolute,), (to_the_close,)),
        Case((get, get), (with_trailer,)),
        Case((get,), (hop_by_hop,)),
        Case((post,), (OK,), early=True, timed=True),
        Case((get,), (OK + b"\r\n",)),  # more than the response
        Case((head,), (OK,)),  # a body to HEAD
    ]


DICTIONARY: Final = [
    ANSWER,
    PAUSE,
    b"\r\n",
    b"\r\n\r\n",
    b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n",
    b"HTTP/1.1 ",
    b"Host: a\r\n",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"Connection: upgrade\r\nUpgrade: websocket\r\n",
    b"Expect: 100-continue\r\n",
    b"0\r\n\r\n",
    b"HEAD",
    b"POST",
    b"OPTIONS * ",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n",
    b"HTTP/1.1 304 Not Modified\r\n",
    b"HTTP/1.1 502 Bad Gateway\r\nK-App-Refused: 1\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
]


def prepare_args(argv: list[str]) -> list[str]:
    """libFuzzer's arguments, with a seeded corpus directory and the dictionary added when not given."""
    args = list(argv)
    paths = [Path(arg) for arg in args[1:] if not arg.startswith("-")]
    if not paths:
        corpus = Path(tempfile.mkdtemp(prefix="fuzz-engine-corpus-"))
        args.append(str(corpus))
        paths = [corpus]
        print(f"fuzz_engine: corpus in {corpus}", file=sys.stderr)
    for path in paths:
        if path.is_file():
            continue  # an input to run again (a crash's, say), not a corpus
        path.mkdir(parents=True, exist_ok=True)
        if not any(path.iterdir()):
            for i, case in enumerate(seeds()):
                (path / f"seed-{i:02d}").write_bytes(case.encode())
    if not any(arg.startswith("-dict=") for arg in args):
        args.insert(1, f"-dict={write_dictionary()}")
    return args


def write_dictionary() -> Path:
    """The token dictionary as a libFuzzer file: one per user, replaced whole, so runs at once never read
    a part of it and runs one after another leave no more files behind."""
    path = Path(tempfile.gettempdir()) / f"fuzz-engine-{os.getuid()}.dict"
    fd, name = tempfile.mkstemp(prefix="fuzz-engine-", suffix=".dict")
    with os.fdopen(fd, "w") as tokens:
        tokens.write("".join(f'"{_dict_escape(token)}"\n' for token in DICTIONARY))
    os.replace(name, path)
    return path


def _dict_escape(token: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02X}" for b in token)


def main(argv: list[str]) -> None:
    import atheris
    import uvloop

    args = prepare_args(argv)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    harness = Harness(loop)
    harness.start()
    atheris.Setup(args, harness.test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
