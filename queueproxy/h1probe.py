"""Readiness probes over HTTP/1.1: an `httpGet` probe's request, on a fresh connection as kubelet's are.

The request carries `Connection: close`; the status decides: 200-399 passes. Redirects are not followed, so a
3xx passes (kubelet passes a redirect it does not follow, too). The response is read to its end, or to
`MAX_BODY` bytes of body, or to the app closing the connection, whichever comes first: an app answering a
probe as usual never writes into a reset connection (one with a longer body may, past `MAX_BODY`). The path
is percent-encoded where it is not ASCII-safe, as kubelet's URL is. `https` probes use TLS without verifying
the certificate, as kubelet's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from typing import Final
from urllib.parse import quote

import httptools

from serving.http.wire import encode_headers

MAX_BODY: Final = 10 * 1024
"""Body bytes read before the probe stops reading (kubelet keeps 10 KiB of a probe's body)."""

_READ: Final = 64 * 1024
_PATH_SAFE: Final = "/?=&%:@!$'()*+,;~-._"
"""Kept as they are in a probe's path and query (`%`: an escape already made); anything else is escaped."""
_CLOSE_WAIT: Final = 1.0
"""Seconds an ended probe waits for its connection to close (a TLS close may wait for the peer)."""


class ProbeFailed(Exception):
    """The app's answer was not an HTTP response (or ended before its status line)."""


class _Response:
    """httptools callbacks: the final status once its head arrived, whether the whole message did, and how
    much body. Interim responses (1xx other than 101) are skipped, as Go's client, kubelet's, skips them."""

    def __init__(self) -> None:
        self.parser: httptools.HttpResponseParser | None = None
        self.status = 0
        """The final response's status; 0 until its head arrived."""
        self.interim = False
        self.complete = False
        self.body = 0

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        status = int(self.parser.get_status_code())
        if 100 <= status < 200 and status != 101:
            self.interim = True
        else:
            self.status = status

    def on_body(self, data: bytes) -> None:
        self.body += len(data)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False  # the final response follows on the same connection
        else:
            self.complete = True


def request_head(host: str, port: int, path: str, headers: list[tuple[str, str]]) -> bytes:
    """The probe's request head. A `Host` among `headers` replaces the default `host:port` (kubelet does the
    same); the path is percent-encoded where needed, and a header name or value that would split the head
    raises ValueError."""
    path = quote(path, safe=_PATH_SAFE)
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
    ended = False
    try:
        writer.write(head)
        response = _Response()
        parser = response.parser = httptools.HttpResponseParser(response)
        while not response.complete and response.body < MAX_BODY:
            data = await reader.read(_READ)
            if not data:
                break
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                if not response.status:
                    raise ProbeFailed(f"not an HTTP response: {exc}") from None
                break  # a status arrived; what follows it does not change the outcome
        if not response.status:
            raise ProbeFailed("the connection closed before a response head")
        ended = True
        return response.status
    finally:
        if ended:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                async with asyncio.timeout(_CLOSE_WAIT):
                    await writer.wait_closed()
        else:  # failed, or cut off by the caller's deadline: nothing more to wait for
            writer.transport.abort()


@functools.cache
def _insecure() -> ssl.SSLContext:
    """One client context for every `https` probe, made on first use: it loads no CA bundle (nothing is
    verified), and making a context per probe would block the loop on every attempt."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
