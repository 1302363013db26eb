"""Request smuggling and routing confusion: what reaches the upstream is exactly what the client sent.

The upstream here is a raw server that parses every byte it receives with llhttp, so a head that frames its
body wrongly shows up as an extra (or a missing) request instead of being papered over by a tolerant server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving import header
from serving.http import Exchange, UpstreamConnectError, UpstreamError, UpstreamPool
from tests.unit.serving.http.rawhttp import (
    WAIT,
    Handler,
    RawClient,
    RawUpstream,
    engine,
    forwarder,
    raw_server,
    two_gets_forwarded_to,
)

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\nKnative-Serving-Revision: other-00001\r\n\r\n"


@dataclass
class Seen:
    """A request as the upstream parsed it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


@dataclass
class Recorder:
    """Parses each upstream connection's bytes as requests and answers each with 200 `ok`."""

    requests: list[Seen] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class _Parse:
    def __init__(self, recorder: Recorder, writer: asyncio.StreamWriter) -> None:
        self.recorder = recorder
        self.writer = writer
        self.parser = httptools.HttpRequestParser(self)
        self.current: Seen | None = None
        self.url = b""

    def on_message_begin(self) -> None:
        self.current = Seen("", "", [])
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        assert self.current is not None
        self.current.method = self.parser.get_method().decode()
        self.current.target = self.url.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        assert self.current is not None
        self.current.body += body

    def on_message_complete(self) -> None:
        assert self.current is not None
        self.recorder.requests.append(self.current)
        self.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@contextlib.asynccontextmanager
async def recording_upstream() -> AsyncIterator[tuple[Recorder, int]]:
    recorder = Recorder()

    async def serve_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parse = _Parse(recorder, writer)
        while data := await reader.read(65536):
            try:
                parse.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                recorder.errors.append(str(exc))
                return

    async with raw_server(serve_conn) as port:
        yield recorder, port


def adding_forwarder(pool: UpstreamPool) -> Handler:
    """Forwards as a proxy does: a copy of the client's headers plus the headers the proxy adds itself."""

    async def handle(ex: Exchange) -> None:
        headers = ex.request.headers.copy()
        headers.set(header.X_FORWARDED_FOR, "10.0.0.1")
        headers.set(header.ORIGINAL_HOST, "a")
        headers.set(header.REVISION, "mine-00001")
        await ex.forward(pool, headers)

    return handle


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nConnection: Content-Length\r\nContent-Length: %d\r\n\r\n%s"
            % (len(SMUGGLED), SMUGGLED),
            id="connection-content-length",
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, content-length , x-other\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED),
            id="content-length-among-tokens",
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nConnection: Transfer-Encoding\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED),
            id="connection-transfer-encoding",
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nConnection: host\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED),
            id="two-connection-headers",
        ),
    ],
)
async def test_connection_tokens_never_unframe_the_body(request_bytes: bytes) -> None:
    async with recording_upstream() as (recorder, port):
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(adding_forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            first = await client.request(request_bytes)
            second = await client.request(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
            await client.close()
        await pool.close()
    assert (first.status, second.status) == (200, 200)
    assert recorder.errors == []
    assert [(r.method, r.target) for r in recorder.requests] == [("POST", "/echo"), ("GET", "/next")]
    assert recorder.requests[0].body == SMUGGLED


@pytest.mark.parametrize(
    "name",
    [
        header.HOST,
        header.X_FORWARDED_FOR,
        header.ORIGINAL_HOST,
        header.REVISION,
    ],
)
async def test_connection_tokens_never_remove_what_the_proxy_routes_by_or_adds(name: str) -> None:
    async with recording_upstream() as (recorder, port):
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(adding_forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            response = await client.request(
                f"GET / HTTP/1.1\r\nHost: a\r\nConnection: {name}, x-private\r\nX-Private: 1\r\n\r\n".encode()
            )
            await client.close()
        await pool.close()
    assert response.status == 200
    seen = recorder.requests[0]
    assert seen.header(name) is not None, seen.headers
    assert seen.header("x-private") is None  # other named headers still go, as hop-by-hop ones must


async def test_a_handler_cannot_unframe_the_body_either() -> None:
    """Whatever Content-Length the handler's headers carry, the engine frames the body it relays."""

    async def handle(ex: Exchange) -> None:
        headers = ex.request.headers.copy()
        headers.remove(header.CONTENT_LENGTH)
        await ex.forward(pool, headers)

    async with recording_upstream() as (recorder, port):
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(handle) as eport:
            client = await RawClient.connect(eport)
            body = SMUGGLED
            first = await client.request(
                b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await client.close()
        await pool.close()
    assert first.status == 200
    assert [(r.method, r.target, r.body) for r in recorder.requests] == [("POST", "/p", SMUGGLED)]


async def test_an_apps_connection_tokens_never_unframe_the_response() -> None:
    """`Connection: content-length` from the app: the client still gets the length, and the next response
    on the same connection is not glued to this one."""

    async def serve_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(
                b"HTTP/1.1 200 OK\r\nConnection: content-length, x-app\r\nX-App: 1\r\nContent-Length: 5\r\n"
                b"\r\nhello"
            )

    first, second = await two_gets_forwarded_to(serve_conn)
    assert (first.status, first.body, first.header("content-length")) == (200, b"hello", "5")
    assert first.header("x-app") is None
    assert (second.status, second.body) == (200, b"hello")


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="two-hosts"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", id="two-equal-hosts"),
        pytest.param(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", id="two-hosts-http10"),
        pytest.param(b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", id="http11-without-host"),
        pytest.param(b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", id="absolute-form-other-scheme"),
        pytest.param(b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", id="absolute-form-userinfo"),
        pytest.param(b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", id="relative-target"),
    ],
)
async def test_ambiguous_routing_is_refused_with_400(request_bytes: bytes) -> None:
    async with recording_upstream() as (recorder, port):
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            response = await client.request(request_bytes)
            assert await client.closed()
            await client.close()
        await pool.close()
    assert response.status == 400
    assert recorder.requests == []


async def test_absolute_form_becomes_origin_form_with_its_authority_as_host() -> None:
    async with recording_upstream() as (recorder, port):
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            one = await client.request(
                b"GET http://beta.default.localhost/x?q=1 HTTP/1.1\r\nHost: alpha\r\n\r\n"
            )
            two = await client.request(b"GET HTTP://b:8080?q HTTP/1.1\r\nHost: alpha\r\n\r\n")
            await client.close()
        await pool.close()
    assert (one.status, two.status) == (200, 200)
    assert [(r.target, r.header("host")) for r in recorder.requests] == [
        ("/x?q=1", "beta.default.localhost"),
        ("/?q", "b:8080"),
    ]
    assert all(len([k for k, _ in r.headers if k == "host"]) == 1 for r in recorder.requests)


# -- a 502 from a queue-proxy whose app refused the connection --------------------------------------------


def _refusing_upstream(marked: bool) -> RawUpstream:
    mark = b"K-App-Refused: 1\r\n" if marked else b""

    async def serve_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\n%sContent-Length: 7\r\n\r\nrefused" % mark)

    return serve_conn


async def test_marked_502_for_a_request_without_body_is_raised_and_the_exchange_can_go_elsewhere() -> None:
    outcomes: list[str] = []
    async with raw_server(_refusing_upstream(True)) as bad, recording_upstream() as (recorder, good):
        refusing = UpstreamPool("127.0.0.1", bad)
        working = UpstreamPool("127.0.0.1", good)

        async def handle(ex: Exchange) -> None:
            try:
                await ex.forward(refusing, ex.request.headers, retry_refused=True)
            except UpstreamConnectError as exc:
                outcomes.append(str(exc))
                await ex.forward(working, ex.request.headers)

        async with engine(handle) as eport:
            client = await RawClient.connect(eport)
            response = await client.request(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            again = await client.request(b"GET /y HTTP/1.1\r\nHost: a\r\n\r\n")
            await client.close()
        await refusing.close()
        await working.close()
    assert (response.status, response.body, again.status) == (200, b"ok", 200)
    assert len(outcomes) == 2
    assert [r.target for r in recorder.requests] == ["/x", "/y"]


@pytest.mark.parametrize(
    ("marked", "retry", "request_bytes"),
    [
        pytest.param(
            True, True, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi", id="body-sent"
        ),
        pytest.param(
            False, True, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi", id="unmarked"
        ),
        pytest.param(True, False, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", id="not-asked-to-retry"),
    ],
)
async def test_a_502_is_relayed_without_the_mark_when_it_cannot_be_retried(
    marked: bool, retry: bool, request_bytes: bytes
) -> None:
    """With a body already streamed (or from an app, to a queue-proxy that does not retry) the 502 is the
    client's answer; the internal mark never reaches it."""
    async with raw_server(_refusing_upstream(marked)) as port:
        pool = UpstreamPool("127.0.0.1", port)

        async def handle(ex: Exchange) -> None:
            await ex.forward(pool, ex.request.headers, retry_refused=retry)

        async with engine(handle) as eport:
            client = await RawClient.connect(eport)
            response = await client.request(request_bytes)
            await client.close()
        await pool.close()
    assert (response.status, response.body) == (502, b"refused")
    assert response.header(header.APP_REFUSED) is None


async def test_stale_connection_then_refused_reconnect_leaves_the_exchange_reforwardable() -> None:
    """The upstream answers once, then closes the pooled connection on the next request and stops listening:
    the engine's retry on a fresh connection is refused, and the handler can still send the same exchange
    elsewhere (the router's fallback to the activator, the activator's next pod)."""
    fallback: list[str] = []
    served = 0

    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while await reader.readuntil(b"\r\n\r\n"):
                if served:
                    server.close()  # no new connections from now on
                    break
                served += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        writer.close()

    server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
    dying = UpstreamPool("127.0.0.1", server.sockets[0].getsockname()[1])
    async with recording_upstream() as (recorder, good):
        working = UpstreamPool("127.0.0.1", good)

        async def handle(ex: Exchange) -> None:
            try:
                await ex.forward(dying, ex.request.headers)
            except (UpstreamConnectError, UpstreamError) as exc:
                fallback.append(type(exc).__name__)
                await ex.forward(working, ex.request.headers)

        async with engine(handle) as eport:
            client = await RawClient.connect(eport)
            first = await client.request(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
            second = await asyncio.wait_for(client.request(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n"), WAIT)
            await client.close()
        await dying.close()
        await working.close()
    assert (first.status, first.body) == (200, b"1")
    assert (second.status, second.body) == (200, b"ok")
    assert fallback == ["UpstreamConnectError"]
    assert [r.target for r in recorder.requests] == ["/2"]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        pytest.param(UpstreamConnectError("refused"), 502, id="connect"),
        pytest.param(UpstreamError("closed", response_started=False), 502, id="upstream"),
        pytest.param(RuntimeError("bug"), 500, id="handler-bug"),
    ],
)
async def test_an_upstream_failure_that_escapes_a_handler_is_a_502_not_a_500(
    error: Exception, status: int
) -> None:
    async def handle(ex: Exchange) -> None:
        raise error

    async with engine(handle) as eport:
        client = await RawClient.connect(eport)
        response = await client.request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await client.close()
    assert response.status == status


# -- property: the upstream parses exactly the requests the client sent -----------------------------------

_TOKENS = [
    "content-length",
    "transfer-encoding",
    "host",
    "x-forwarded-for",
    "knative-serving-revision",
    "k-original-host",
    "x-a",
    "x-b",
    "keep-alive",
    "te",
    "expect",
]


@dataclass
class Sent:
    method: str
    target: str
    body: bytes
    wire: bytes


@st.composite
def client_requests(draw: st.DrawFn) -> Sent:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
    target = "/" + draw(st.text(alphabet="abcxyz0123456789/?=&", max_size=12))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    body = (
        b""
        if framing == "none"
        else draw(st.sampled_from([SMUGGLED, b"", b"x" * 70_000])) + draw(st.binary(max_size=40))
    )
    tokens = draw(st.lists(st.sampled_from(_TOKENS), max_size=4))
    lines = [f"{method} {target} HTTP/1.1", "Host: a"]
    for _ in range(draw(st.integers(0, 2))):
        lines.append(f"Connection: {', '.join(tokens)}" if tokens else "Connection: keep-alive")
    lines += ["X-A: 1", "X-B: 2"]
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        cut = draw(st.integers(0, len(body)))
        parts = [p for p in (body[:cut], body[cut:]) if p]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    else:
        payload = b""
    wire = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    return Sent(method, target, body, wire)


async def _relay_all(sent: list[Sent], pipelined: bool) -> tuple[Recorder, list[int]]:
    async with recording_upstream() as (recorder, port):
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(adding_forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            statuses: list[int] = []
            if pipelined:
                await client.send(b"".join(s.wire for s in sent))
                for _ in sent:
                    statuses.append((await client.read_response()).status)
            else:
                for s in sent:
                    statuses.append((await client.request(s.wire)).status)
            await client.close()
        await pool.close()
    return recorder, statuses


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sent=st.lists(client_requests(), min_size=1, max_size=4), pipelined=st.booleans())
def test_the_upstream_sees_exactly_the_requests_the_client_sent(sent: list[Sent], pipelined: bool) -> None:
    recorder, statuses = asyncio.run(_relay_all(sent, pipelined))
    assert statuses == [200] * len(sent)
    assert recorder.errors == []
    assert [(r.method, r.target, r.body) for r in recorder.requests] == [
        (s.method, s.target, s.body) for s in sent
    ]
    for seen in recorder.requests:
        assert len([k for k, _ in seen.headers if k in ("content-length", "transfer-encoding")]) <= 1
