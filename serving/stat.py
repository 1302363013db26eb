"""Knative's autoscaler wire formats: the protobuf `Stat` and `WireStatMessages`.

The queue-proxy serves a `Stat` on `:9090/metrics` (`Content-Type: application/protobuf`) and the activator
pushes `WireStatMessages` over a websocket, exactly as Knative's components do, so our autoscaler can scrape
Knative's queue-proxy and Knative's autoscaler can scrape ours. Messages are built from a descriptor at import
time (no generated code); the typed `Stat` dataclass is what the rest of the code sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PROTOBUF_CONTENT_TYPE: Final = "application/protobuf"

_F = descriptor_pb2.FieldDescriptorProto


def _build() -> tuple[Any, Any, Any]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="serving/metrics.proto", package="serving.metrics", syntax="proto3"
    )
    stat = proto.message_type.add(name="Stat")
    for number, (name, kind) in enumerate(
        [
            ("pod_name", _F.TYPE_STRING),
            ("average_concurrent_requests", _F.TYPE_DOUBLE),
            ("average_proxied_concurrent_requests", _F.TYPE_DOUBLE),
            ("request_count", _F.TYPE_DOUBLE),
            ("proxied_request_count", _F.TYPE_DOUBLE),
            ("process_uptime", _F.TYPE_DOUBLE),
            ("timestamp", _F.TYPE_INT64),
        ],
        start=1,
    ):
        stat.field.add(name=name, number=number, type=kind, label=_F.LABEL_OPTIONAL)
    wire = proto.message_type.add(name="WireStatMessage")
    wire.field.add(name="namespace", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    wire.field.add(name="name", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    wire.field.add(
        name="stat",
        number=3,
        type=_F.TYPE_MESSAGE,
        type_name=".serving.metrics.Stat",
        label=_F.LABEL_OPTIONAL,
    )
    messages = proto.message_type.add(name="WireStatMessages")
    messages.field.add(
        name="messages",
        number=1,
        type=_F.TYPE_MESSAGE,
        type_name=".serving.metrics.WireStatMessage",
        label=_F.LABEL_REPEATED,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    classes = message_factory.GetMessages([proto], pool=pool)
    return (
        classes["serving.metrics.Stat"],
        classes["serving.metrics.WireStatMessage"],
        classes["serving.metrics.WireStatMessages"],
    )


_StatMsg, _WireStatMsg, _WireStatMsgs = _build()


class DecodeError(ValueError):
    """The bytes are not a valid message of the expected type."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stat:
    """One pod's (or one activator's, for one revision) load over the last reporting window."""

    pod_name: str = ""
    average_concurrent_requests: float = 0.0
    """Time-weighted average of in-flight requests over the window, including proxied ones."""
    average_proxied_concurrent_requests: float = 0.0
    """The part of the average that came through the activator (`K-Proxy-Request: activator`)."""
    request_count: float = 0.0
    proxied_request_count: float = 0.0
    process_uptime: float = 0.0
    """Seconds since the reporting process started."""
    timestamp: int = 0
    """Unix time of the report in nanoseconds."""


@dataclass(frozen=True, slots=True)
class RevisionStat:
    """A stat for one revision, as carried in `WireStatMessages`."""

    namespace: str
    name: str
    stat: Stat


def _fill(msg: Any, stat: Stat) -> None:
    msg.pod_name = stat.pod_name
    msg.average_concurrent_requests = stat.average_concurrent_requests
    msg.average_proxied_concurrent_requests = stat.average_proxied_concurrent_requests
    msg.request_count = stat.request_count
    msg.proxied_request_count = stat.proxied_request_count
    msg.process_uptime = stat.process_uptime
    msg.timestamp = stat.timestamp


def _read(msg: Any) -> Stat:
    return Stat(
        pod_name=msg.pod_name,
        average_concurrent_requests=msg.average_concurrent_requests,
        average_proxied_concurrent_requests=msg.average_proxied_concurrent_requests,
        request_count=msg.request_count,
        proxied_request_count=msg.proxied_request_count,
        process_uptime=msg.process_uptime,
        timestamp=msg.timestamp,
    )


def encode_stat(stat: Stat) -> bytes:
    msg = _StatMsg()
    _fill(msg, stat)
    data: bytes = msg.SerializeToString()
    return data


def decode_stat(data: bytes) -> Stat:
    msg = _StatMsg()
    try:
        msg.ParseFromString(data)
    except Exception as exc:  # protobuf raises its own DecodeError type; normalise it
        raise DecodeError(f"not a Stat message: {exc}") from None
    return _read(msg)


def encode_wire(stats: list[RevisionStat]) -> bytes:
    msgs = _WireStatMsgs()
    for item in stats:
        wire = msgs.messages.add()
        wire.namespace = item.namespace
        wire.name = item.name
        _fill(wire.stat, item.stat)
    data: bytes = msgs.SerializeToString()
    return data


def decode_wire(data: bytes) -> list[RevisionStat]:
    msgs = _WireStatMsgs()
    try:
        msgs.ParseFromString(data)
    except Exception as exc:  # see decode_stat
        raise DecodeError(f"not a WireStatMessages message: {exc}") from None
    return [RevisionStat(m.namespace, m.name, _read(m.stat)) for m in msgs.messages]
