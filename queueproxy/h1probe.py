"""Readiness probes over HTTP/1.1: an `httpGet` probe's request, on a fresh connection as kubelet's are.

The request carries `Connection: close`; the status decides: 200-399 passes. Redirects are not followed, so a
3xx passes (kubelet passes a redirect it does not follow, too). The response is read to its end, or to
`MAX_BODY` bytes of body, or to the app closing the connection, whichever comes first, so that the app never
writes into a connection reset under it. `https` probes use TLS without verifying the certificate, as
kubelet's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Final

import httptools

from serving.http.wire import encode_headers

MAX_BODY: Final = 10 * 1024
"""Body bytes read before the probe stops reading (kubelet keeps 10 KiB of a probe's body)."""

_READ: Final = 64 * 1024


class ProbeFailed(Exception):
    """The app's answer was not an HTTP response (or ended before its status line)."""


class _Response:
    """httptools callbacks: when the head and the whole message have arrived, and how much body."""

    def __init__(self) -> None:
        self.head = False
        self.complete = False
        self.body = 0

    def on_headers_complete(self) -> None:
        self.head = True

    def on_body(self, data: bytes) -> None:
        self.body += len(data)

    def on_message_complete(self) -> None:
        self.complete = True


def request_head(host: str, port: int, path: str, headers: list[tuple[str, str]]) -> bytes:
    """The probe's request head. A `Host` among `headers` replaces the default `host:port` (kubelet does the
    same); a path, name or value that would split the head raises ValueError."""
    if any(c <= " " or c == "\x7f" for c in path):
        raise ValueError(f"invalid probe path {path!r}")
    authority = f"[{host}]" if ":" in host else host
    own = {name.lower() for name, _ in headers}
    fields = [] if "host" in own else [("Host", f"{authority}:{port}")]
    fields += [(name, value) for name, value in headers if name.lower() != "connection"]
    fields.append(("Connection", "close"))
    return f"GET {path} HTTP/1.1\r\n".encode("latin-1") + encode_headers(fields) + b"\r\n"


async def http_get(
    host: str, port: int, path: str, headers: list[tuple[str, str]], *, tls: bool = False
) -> int:
    """The status of one GET over a fresh connection; the caller bounds it in time. Raises `ProbeFailed`,
    OSError or ValueError when no status arrives."""
    head = request_head(host, port, path, headers)
    reader, writer = await asyncio.open_connection(host, port, ssl=_insecure() if tls else None)
    try:
        writer.write(head)
        response = _Response()
        parser = httptools.HttpResponseParser(response)
        while not response.complete and response.body < MAX_BODY:
            data = await reader.read(_READ)
            if not data:
                break
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                if not response.head:
                    raise ProbeFailed(f"not an HTTP response: {exc}") from None
                break  # a status arrived; what follows it does not change the outcome
        if not response.head:
            raise ProbeFailed("the connection closed before a response head")
        return int(parser.get_status_code())
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def _insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
