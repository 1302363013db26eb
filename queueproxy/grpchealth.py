"""The gRPC health check (`grpc.health.v1.Health/Check`) that a `grpc` readiness probe makes, as kubelet does.

One HTTP/2 cleartext connection per attempt (kubelet's probes open their own), one unary call asking about
`service` (empty: the server as a whole). The app is ready when the call ends with gRPC status OK and the
reply says SERVING; anything else (UNIMPLEMENTED because the app has no health service, NOT_SERVING, a reset,
a closed connection) is a failed attempt. The two messages are a single field each, so they are written
and read here rather than through generated protobuf code.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import h2.config
import h2.connection
import h2.events

PATH: Final = b"/grpc.health.v1.Health/Check"
SERVING: Final = 1
"""`HealthCheckResponse.ServingStatus.SERVING`."""
_MAX_REPLY: Final = 64 * 1024
"""More than any health reply: a bigger one is no health service's."""


class HealthCheckFailed(Exception):
    """The health call ended otherwise than with SERVING; the message says how."""


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


async def check(host: str, port: int, service: str, user_agent: str) -> None:
    """One health call; returns when the app reports SERVING, raises `HealthCheckFailed` (or OSError) else.

    The caller bounds it in time."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        stream_id = conn.get_next_available_stream_id()
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        conn.send_headers(
            stream_id,
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":authority", authority.encode()),
                (b":path", PATH),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                (b"user-agent", user_agent.encode()),
            ],
        )
        conn.send_data(stream_id, request_message(service), end_stream=True)
        writer.write(conn.data_to_send())
        fields: dict[bytes, bytes] = {}
        reply = bytearray()
        while True:
            data = await reader.read(65536)
            if not data:
                raise HealthCheckFailed("the app closed the connection")
            for event in conn.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    fields.update(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    reply += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                    if len(reply) > _MAX_REPLY:
                        raise HealthCheckFailed("the health reply is too large")
                elif isinstance(event, h2.events.StreamReset):
                    raise HealthCheckFailed(f"the app reset the call (error code {event.error_code})")
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise HealthCheckFailed("the app ended the connection (GOAWAY)")
                elif isinstance(event, h2.events.StreamEnded):
                    _verdict(fields, bytes(reply))
                    return
            writer.write(conn.data_to_send())
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _verdict(fields: dict[bytes, bytes], reply: bytes) -> None:
    if fields.get(b":status") != b"200":
        raise HealthCheckFailed(f"HTTP status {fields.get(b':status', b'?').decode()}")
    code = fields.get(b"grpc-status")
    if code != b"0":
        message = fields.get(b"grpc-message", b"").decode("utf-8", "replace")
        raise HealthCheckFailed(f"gRPC status {(code or b'?').decode()} {message}".strip())
    try:
        status = serving_status(reply)
    except ValueError as exc:
        raise HealthCheckFailed(f"unreadable health reply: {exc}") from None
    if status != SERVING:
        raise HealthCheckFailed(f"the app reports status {status}, not SERVING")


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
