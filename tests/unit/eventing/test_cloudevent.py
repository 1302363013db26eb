"""CloudEvents over HTTP as the Broker ingress reads them and a Trigger delivers them."""

from __future__ import annotations

import base64
import json

import pytest
from multidict import CIMultiDict

from eventing.cloudevent import MAX_EVENT_BYTES, EventError, binary_headers, is_event, read_event
from eventing.event import Event

BINARY = {"ce-specversion": "1.0", "ce-id": "a1", "ce-source": "/src", "ce-type": "com.example.t"}


def headers(**extra: str) -> CIMultiDict[str]:
    return CIMultiDict({**BINARY, **extra})


def test_binary_mode_keeps_attributes_and_bytes() -> None:
    body = b"\x00\x01 not json"
    event = read_event(
        headers(
            **{"Content-Type": "application/octet-stream", "ce-myext": "x%20y", "traceparent": "00-1-2-01"}
        ),
        body,
    )
    assert event.attributes == {
        "specversion": "1.0",
        "id": "a1",
        "source": "/src",
        "type": "com.example.t",
        "myext": "x y",
        "datacontenttype": "application/octet-stream",
    }
    assert event.data == body
    assert event.headers == {"traceparent": "00-1-2-01"}


def test_structured_mode_json_data_and_base64() -> None:
    doc = {
        "specversion": "1.0",
        "id": "1",
        "source": "/s",
        "type": "t",
        "count": 5,
        "flag": True,
        "data": {"a": [1]},
    }
    event = read_event(
        CIMultiDict({"Content-Type": "application/cloudevents+json"}), json.dumps(doc).encode()
    )
    assert event.attributes["count"] == "5"
    assert event.attributes["flag"] == "true"
    assert event.attributes["datacontenttype"] == "application/json"
    assert "time" not in event.attributes  # nothing is added to what the producer sent
    assert json.loads(event.data) == {"a": [1]}
    raw = {
        "specversion": "1.0",
        "id": "1",
        "source": "/s",
        "type": "t",
        "data_base64": base64.b64encode(b"\xff").decode(),
    }
    binary = read_event(
        CIMultiDict({"Content-Type": "application/cloudevents+json"}), json.dumps(raw).encode()
    )
    assert binary.data == b"\xff"


@pytest.mark.parametrize(
    ("hdrs", "body", "status", "words"),
    [
        pytest.param({"Content-Type": "text/plain"}, b"hi", 400, "not a CloudEvent", id="plain-post"),
        pytest.param({"ce-specversion": "1.0", "ce-id": "1"}, b"", 400, "source", id="missing-source"),
        pytest.param(
            {"ce-specversion": "1.0", "ce-source": "/s", "ce-type": "t"}, b"", 400, "id", id="missing-id"
        ),
        pytest.param({**BINARY, "ce-id": ""}, b"", 400, "'id' must not be None or empty", id="empty-id"),
        pytest.param({**BINARY, "ce-subject": ""}, b"", 400, "subject", id="empty-subject"),
        pytest.param({**BINARY, "ce-time": "2026-12-06T10:00:00"}, b"", 400, "timezone", id="naive-time"),
        pytest.param({**BINARY, "ce-specversion": "0.3"}, b"", 400, "specversion", id="old-specversion"),
        pytest.param({**BINARY, "ce-time": "yesterday"}, b"", 400, "time", id="bad-time"),
        pytest.param({**BINARY, "ce-Bad_Ext": "1"}, b"", 400, "bad_ext", id="bad-extension-name"),
        pytest.param({"Content-Type": "application/cloudevents+json"}, b"{", 400, "not JSON", id="bad-json"),
        pytest.param(
            {"Content-Type": "application/cloudevents-batch+json"}, b"[]", 400, "batched", id="batch"
        ),
        pytest.param(BINARY, b"x" * (MAX_EVENT_BYTES + 1), 413, "bytes", id="oversized"),
        pytest.param(
            {"Content-Type": "application/cloudevents+json"},
            b'{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"a/b\\r\\nX-Evil: 1"}',
            400,
            "printable ASCII",
            id="header-injection",
        ),
        pytest.param(
            {"Content-Type": "application/cloudevents+json"},
            b'{"specversion":"1.0","id":"1","source":"/s","type":"t","Evil":"x"}',
            400,
            "lower-case",
            id="upper-case-attribute",
        ),
        pytest.param(
            {"Content-Type": "application/cloudevents+json"}, b"[" * 100_000, 400, "nested", id="deep-nesting"
        ),
    ],
)
def test_bad_events_say_why(hdrs: dict[str, str], body: bytes, status: int, words: str) -> None:
    with pytest.raises(EventError) as caught:
        read_event(CIMultiDict(hdrs), body)
    assert caught.value.status == status
    assert words in str(caught.value)


def test_the_sdk_verdict_is_per_event_not_per_shape_of_names() -> None:
    """Events of one shape share the SDK's verdict; a value that changes it (empty, a zone-less time)
    changes the shape, so a valid event is never refused for an earlier one, nor a bad one let through."""
    good = read_event(headers(**{"ce-time": "2026-12-06T10:00:00Z", "ce-subject": "s"}), b"")
    assert good.attributes["time"] == "2026-12-06T10:00:00Z"
    for bad in ({"ce-time": "2026-12-06T10:00:00"}, {"ce-subject": ""}, {"ce-time": "noon"}):
        with pytest.raises(EventError):
            read_event(headers(**{"ce-time": "2026-12-06T10:00:00Z", "ce-subject": "s", **bad}), b"")
    again = read_event(headers(**{"ce-time": "2026-12-07T11:00:00+01:00", "ce-subject": "t"}), b"")
    assert again.attributes["subject"] == "t"


def test_binary_headers_round_trip() -> None:
    event = Event(
        {
            "specversion": "1.0",
            "id": "1",
            "source": "/s",
            "type": "t",
            "subject": "a b%c",
            "datacontenttype": "text/plain",
        },
        b"hello",
        {"traceparent": "00-x"},
    )
    out = CIMultiDict(binary_headers(event))
    assert out["Content-Type"] == "text/plain"
    assert out["ce-subject"] == "a%20b%25c"
    assert is_event(out)
    assert read_event(out, event.data) == event


def test_trace_headers_that_are_not_printable_ascii_are_dropped() -> None:
    event = read_event(headers(traceparent="\u2603", tracestate="a=1"), b"")
    assert event.headers == {"tracestate": "a=1"}
