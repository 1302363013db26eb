"""The HTTP/1.1 probe against apps that answer in every shape: raw sockets, so that each case is exact."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from queueproxy import h1probe
from queueproxy.probe import ProbeSpec
from queueproxy.readiness import Readiness
from tests.unit.serving.http.rawhttp import WAIT, RawUpstream, raw_server


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def answering(response: bytes, heads: list[bytes] | None = None, *, then_wait: bool = False) -> RawUpstream:
    """An app that reads the request head, writes `response` and then closes (or, with `then_wait`, keeps
    the connection open until the client closes it)."""

    async def serve_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        if heads is not None:
            heads.append(head)
        writer.write(response)
        await writer.drain()
        if then_wait:
            await reader.read()

    return serve_conn


async def status_from(
    serve_conn: RawUpstream, path: str = "/", headers: list[tuple[str, str]] | None = None
) -> int:
    async with raw_server(serve_conn) as port:
        return await asyncio.wait_for(h1probe.http_get("127.0.0.1", port, path, headers or []), WAIT)


async def test_the_request_is_a_get_with_host_the_given_headers_and_connection_close() -> None:
    heads: list[bytes] = []
    ok = b"HTTP/1.1 204 No Content\r\n\r\n"
    async with raw_server(answering(ok, heads)) as port:
        status = await h1probe.http_get("127.0.0.1", port, "/healthz?full=1", [("X-Check", "1")])
    assert status == 204
    assert heads == [
        b"GET /healthz?full=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Check: 1\r\nConnection: close\r\n\r\n"
        % port
    ]


async def test_a_host_header_replaces_the_default_and_a_connection_header_is_ours() -> None:
    heads: list[bytes] = []
    async with raw_server(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", heads)) as port:
        await h1probe.http_get(
            "127.0.0.1", port, "/", [("host", "app.example"), ("Connection", "keep-alive")]
        )
    assert heads == [b"GET / HTTP/1.1\r\nhost: app.example\r\nConnection: close\r\n\r\n"]


async def test_an_app_that_keeps_the_connection_open_is_not_waited_for() -> None:
    """A complete response ends the probe even when the app ignores `Connection: close`."""
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
    started = time.monotonic()
    assert await status_from(answering(response, then_wait=True)) == 200
    assert time.monotonic() - started < WAIT / 2


async def test_a_body_delimited_by_close_and_an_endless_body_both_give_their_status() -> None:
    assert await status_from(answering(b"HTTP/1.0 503 Busy\r\n\r\nnot yet")) == 503

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(10_000):  # bounded: far more than the probe reads
            writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
            await writer.drain()

    assert await status_from(endless) == 200


@pytest.mark.parametrize(
    ("interim", "final", "status"),
    [
        pytest.param(
            b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200, id="100"
        ),
        pytest.param(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            204,
            id="103",
        ),
        pytest.param(
            b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 503 Busy\r\n\r\nlater", 503, id="100-then-503"
        ),
    ],
)
async def test_interim_responses_are_skipped_for_the_final_status(
    interim: bytes, final: bytes, status: int
) -> None:
    """The interim response arrives on its own, a moment before the final one (as an app sends it)."""

    async def serve_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(interim)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(final)
        await writer.drain()

    assert await status_from(serve_conn) == status


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(b"", id="closed-without-an-answer"),
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n", id="only-an-interim-response"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Le", id="closed-mid-head"),
        pytest.param(b"SSH-2.0-OpenSSH_9.2\r\n", id="not-http"),
    ],
)
async def test_no_status_is_a_failed_probe(response: bytes) -> None:
    with pytest.raises(h1probe.ProbeFailed):
        await status_from(answering(response))


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([("X-Bad", "1\r\nInjected: 2")], id="crlf-in-value"),
        pytest.param([("X Bad", "1")], id="space-in-name"),
    ],
)
def test_a_header_that_would_split_the_head_is_refused(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError, match="invalid"):
        h1probe.request_head("127.0.0.1", 8080, "/", headers)


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        pytest.param("/ready?x=1&y=%2F", b"/ready?x=1&y=%2F", id="kept"),
        pytest.param("/a b", b"/a%20b", id="space"),
        pytest.param("/\r\nX: y", b"/%0D%0AX:%20y", id="crlf"),
        pytest.param("/\u00e9t\u00e9", b"/%C3%A9t%C3%A9", id="latin-1"),
        pytest.param("/\u5065\u5eb7", b"/%E5%81%A5%E5%BA%B7", id="cjk"),
    ],
)
def test_the_path_is_percent_encoded_where_needed(path: str, sent: bytes) -> None:
    head = h1probe.request_head("127.0.0.1", 8080, path, [])
    assert head.startswith(b"GET " + sent + b" HTTP/1.1\r\n")


async def test_readiness_counts_an_invalid_probe_as_failing_not_crashing() -> None:
    async with raw_server(answering(b"HTTP/1.1 200 OK\r\n\r\n")) as port:
        spec = ProbeSpec(kind="http", path="/", headers=(("X-Bad", "a\nb"),))
        readiness = Readiness(spec, port, aggressive_poll_timeout=0.02, retry_interval=0.005)
        assert await readiness.check() is False
        await readiness.close()


def self_signed(directory: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "app")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


async def test_a_hung_https_app_fails_the_probe_within_its_timeout(tmp_path: Path) -> None:
    """The TLS handshake completes, then the app does nothing at all, not even answer a TLS close (a
    blocking server's thread stuck elsewhere): the attempt ends at its deadline, not when a TLS close
    waiting for the silent peer gives up (30 s)."""
    context = self_signed(tmp_path)
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[ssl.SSLSocket] = []

    def accept_one() -> None:
        conn, _ = listener.accept()
        held.append(context.wrap_socket(conn, server_side=True))  # the handshake; then nothing

    thread = threading.Thread(target=accept_one, daemon=True)
    thread.start()
    try:
        readiness = Readiness(ProbeSpec(kind="http", scheme="https"), listener.getsockname()[1])
        started = time.monotonic()
        assert await asyncio.wait_for(readiness.attempt(0.3), WAIT) is False
        assert time.monotonic() - started < 2.0
        await readiness.close()
    finally:
        thread.join(WAIT)
        for conn in held:
            conn.close()
        listener.close()


async def test_an_https_probe_speaks_tls_without_verifying_the_certificate(tmp_path: Path) -> None:
    heads: list[bytes] = []
    serve_conn = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", heads)
    server = await asyncio.start_server(serve_conn, "127.0.0.1", 0, ssl=self_signed(tmp_path))
    async with server:
        port = server.sockets[0].getsockname()[1]
        spec = ProbeSpec(kind="http", scheme="https", path="/secure")
        readiness = Readiness(spec, port, aggressive_poll_timeout=WAIT)
        assert await asyncio.wait_for(readiness.check(), WAIT) is True
        await readiness.close()
        plain = Readiness(ProbeSpec(kind="http", path="/secure"), port, aggressive_poll_timeout=0.02)
        assert await plain.check() is False, "plain HTTP to a TLS port gets no HTTP status"
        await plain.close()
    assert heads[0].startswith(b"GET /secure HTTP/1.1\r\n")
