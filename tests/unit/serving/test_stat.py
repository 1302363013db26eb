from __future__ import annotations

import pytest

from serving.stat import (
    DecodeError,
    RevisionStat,
    Stat,
    decode_stat,
    decode_wire,
    encode_stat,
    encode_wire,
)


def test_stat_wire_bytes_match_knative_field_numbers() -> None:
    stat = Stat(pod_name="p", average_concurrent_requests=1.5, request_count=3.0, timestamp=5)
    # field 1 string "p", field 2 double 1.5, field 4 double 3.0, field 7 varint 5
    expected = bytes.fromhex("0a0170" + "11000000000000f83f" + "210000000000000840" + "3805")
    assert encode_stat(stat) == expected
    assert decode_stat(expected) == stat


def test_stat_round_trip_every_field() -> None:
    stat = Stat(
        pod_name="hello-00001-deployment-abc",
        average_concurrent_requests=3.25,
        average_proxied_concurrent_requests=1.0,
        request_count=12.0,
        proxied_request_count=4.0,
        process_uptime=99.5,
        timestamp=1_700_000_000_000_000_000,
    )
    assert decode_stat(encode_stat(stat)) == stat


def test_wire_stat_messages_round_trip() -> None:
    items = [
        RevisionStat("default", "hello-00001", Stat(pod_name="activator-0", request_count=1.0)),
        RevisionStat("ns2", "other-00003", Stat(average_concurrent_requests=7.0)),
    ]
    data = encode_wire(items)
    # WireStatMessages{messages=1}: first byte is field 1, length-delimited.
    assert data[0] == 0x0A
    assert decode_wire(data) == items


def test_garbage_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_stat(b"\xff\xff\xff")
