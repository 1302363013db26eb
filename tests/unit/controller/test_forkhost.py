"""The fork server's framing on a real SOCK_SEQPACKET socketpair: a message of any size arrives whole with its
descriptors, and a message that cannot be read is an error rather than half a message."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from controller.local.runtime.forkhost import INLINE_MAX, ProtocolError, pack, receive, send_packet


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        yield ours, theirs


def send(sock: socket.socket, message: dict[str, object], fds: list[int]) -> None:
    packet, payload = pack(message)
    try:
        send_packet(sock, packet, [*fds, payload] if payload >= 0 else fds)
    finally:
        if payload >= 0:
            os.close(payload)


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(10, id="tiny"),
        pytest.param(INLINE_MAX - 20, id="largest-inline"),
        pytest.param(INLINE_MAX, id="smallest-by-memfd"),
        pytest.param(300_000, id="above-the-socket-buffer"),
        pytest.param(8_000_000, id="eight-megabytes"),
    ],
)
def test_message_of_any_size_arrives_whole_with_its_descriptors(
    pair: tuple[socket.socket, socket.socket], size: int
) -> None:
    ours, theirs = pair
    read, write = os.pipe()
    message = {"id": 7, "env": {"BIG": "x" * size}}
    try:
        send(ours, message, [write])
        got, fds = receive(theirs)
        assert got == message
        assert len(fds) == 1
        os.write(fds[0], b"through the passed descriptor")
        os.close(fds[0])
        assert os.read(read, 100) == b"through the passed descriptor"
    finally:
        os.close(read)
        os.close(write)


def test_end_of_file_is_none(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    ours.close()
    assert receive(theirs) == (None, [])


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        pytest.param(b"x" * (INLINE_MAX + 1), "truncated", id="oversized-packet"),
        pytest.param(b'{"id": 1, "pid":', "not JSON", id="half-a-message"),
        pytest.param(b"[1, 2]", "not a JSON object", id="not-an-object"),
        pytest.param(b'{"payload": 10}', "without its memfd", id="payload-without-memfd"),
    ],
)
def test_message_that_cannot_be_read_is_an_error(
    pair: tuple[socket.socket, socket.socket], packet: bytes, reason: str
) -> None:
    ours, theirs = pair
    ours.send(packet)
    with pytest.raises(ProtocolError, match=reason):
        receive(theirs)


def test_short_payload_is_an_error_and_its_descriptors_are_closed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    read, write = os.pipe()
    payload = os.memfd_create("short")
    try:
        os.write(payload, b'{"id": 1}')
        send_packet(ours, b'{"payload": 100}', [write, payload])
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(ProtocolError, match="9 of its 100 bytes"):
            receive(theirs)
        assert set(os.listdir("/proc/self/fd")) <= before, "a received descriptor leaked"
    finally:
        for fd in (read, write, payload):
            os.close(fd)
