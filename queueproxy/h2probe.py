"""Readiness probes over HTTP/2 cleartext: a `grpc` probe's health check, an `httpGet` probe of an h2c app.

One connection per attempt (kubelet's probes open their own), one request. A `grpc` probe calls
`grpc.health.v1.Health/Check` about `service` (empty: the server as a whole), as kubelet does: the app is
ready when the call ends with gRPC status OK and the reply says SERVING; anything else (UNIMPLEMENTED because
the app has no health service, NOT_SERVING, a reset, a closed connection) is a failed attempt. The two
messages are a single field each, so they are written and read here rather than through generated protobuf
code. An `httpGet` probe of an app whose port is named `h2c` is sent over HTTP/2, since such an app may speak
nothing else (Knative's queue-proxy probes it so too).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import h2.config
import h2.connection
import h2.events

PATH: Final = "/grpc.health.v1.Health/Check"
SERVING: Final = 1
"""`HealthCheckResponse.ServingStatus.SERVING`."""
_MAX_REPLY: Final = 64 * 1024
"""The most of a probe's response body kept: more than any health reply (a longer one is cut, and a cut gRPC
reply is unreadable, so it fails)."""


class ProbeFailed(Exception):
    """The probe's request did not end as a passing probe must; the message says how."""


def request_message(service: str) -> bytes:
    """A length-prefixed `HealthCheckRequest{service}` (field 1, a string) as a gRPC DATA payload."""
    name = service.encode()
    body = b"\x0a" + _varint(len(name)) + name if name else b""
    return b"\x00" + len(body).to_bytes(4, "big") + body


def serving_status(payload: bytes) -> int:
    """`HealthCheckResponse.status` (field 1, a varint) from a length-prefixed reply; 0 (UNKNOWN) when absent.

    Raises ValueError on a compressed or malformed reply."""
    if len(payload) < 5 or payload[0] != 0:
        raise ValueError("not an uncompressed gRPC message")
    length = int.from_bytes(payload[1:5], "big")
    message = payload[5 : 5 + length]
    if len(message) != length:
        raise ValueError("truncated gRPC message")
    status = 0
    at = 0
    while at < len(message):
        key, at = _read_varint(message, at)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, at = _read_varint(message, at)
            if field == 1:
                status = value
        elif wire_type == 2:
            size, at = _read_varint(message, at)
            at += size
        elif wire_type == 5:
            at += 4
        elif wire_type == 1:
            at += 8
        else:
            raise ValueError(f"unexpected protobuf wire type {wire_type}")
    if at != len(message):
        raise ValueError("truncated protobuf field")
    return status


async def request(
    host: str, port: int, path: str, headers: list[tuple[bytes, bytes]], body: bytes | None
) -> tuple[dict[bytes, bytes], bytes]:
    """One request over a fresh HTTP/2 cleartext connection (prior knowledge): its response headers (with
    `:status`, and the trailers merged in) and body. Raises `ProbeFailed` (or OSError, or h2's ProtocolError)
    when it does not end normally. A `body` makes it a POST, else a GET; the caller bounds it in time."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        stream_id = conn.get_next_available_stream_id()
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        conn.send_headers(
            stream_id,
            [
                (b":method", b"GET" if body is None else b"POST"),
                (b":scheme", b"http"),
                (b":authority", authority.encode()),
                (b":path", path.encode("latin-1")),
                *headers,
            ],
            end_stream=body is None,
        )
        if body is not None:
            conn.send_data(stream_id, body, end_stream=True)
        writer.write(conn.data_to_send())
        fields: dict[bytes, bytes] = {}
        reply = bytearray()
        while True:
            data = await reader.read(65536)
            if not data:
                raise ProbeFailed("the app closed the connection")
            for event in conn.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    fields.update(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    if len(reply) < _MAX_REPLY:  # a probe needs no more (kubelet reads 10 KiB)
                        reply += event.data[: _MAX_REPLY - len(reply)]
                    conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    raise ProbeFailed(f"the app reset the stream (error code {event.error_code})")
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise ProbeFailed("the app ended the connection (GOAWAY)")
                elif isinstance(event, h2.events.StreamEnded):
                    return fields, bytes(reply)
            writer.write(conn.data_to_send())
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def http_get(host: str, port: int, path: str, headers: list[tuple[str, str]]) -> int:
    """An `httpGet` probe of an h2c app (one that speaks only HTTP/2): the response status."""
    fields, _ = await request(
        host, port, path, [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers], None
    )
    return int(fields.get(b":status", b"0"))


async def grpc_health(host: str, port: int, service: str, user_agent: str) -> None:
    """gRPC's health check of `service`; returns when the app reports SERVING, raises `ProbeFailed` else."""
    fields, reply = await request(
        host,
        port,
        PATH,
        [
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"user-agent", user_agent.encode()),
        ],
        request_message(service),
    )
    _verdict(fields, reply)


def _verdict(fields: dict[bytes, bytes], reply: bytes) -> None:
    if fields.get(b":status") != b"200":
        raise ProbeFailed(f"HTTP status {fields.get(b':status', b'?').decode()}")
    code = fields.get(b"grpc-status")
    if code != b"0":
        message = fields.get(b"grpc-message", b"").decode("utf-8", "replace")
        raise ProbeFailed(f"gRPC status {(code or b'?').decode()} {message}".strip())
    try:
        status = serving_status(reply)
    except ValueError as exc:
        raise ProbeFailed(f"unreadable health reply: {exc}") from None
    if status != SERVING:
        raise ProbeFailed(f"the app reports status {status}, not SERVING")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
