"""CloudEvents 1.0 over HTTP, both content modes: a request read into an `Event` (validated by the CloudEvents
SDK), and an `Event` written as a binary-mode request for delivery.

Validation is the SDK's (required attributes, their types, `time` in RFC 3339, extension names); the wire
forms are kept here so that an event leaves with exactly the attributes and data it arrived with (the SDK's
reader would add a `time` and re-encode JSON data).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Final
from urllib.parse import quote, unquote

from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.v1.event import CloudEvent
from dateutil.parser import isoparse

from eventing.event import SPECVERSION, Event

STRUCTURED: Final = "application/cloudevents+json"
BATCH: Final = "application/cloudevents-batch+json"
CE_PREFIX: Final = "ce-"
MAX_EVENT_BYTES: Final = 1 << 20
"""Largest event (data plus attributes) the ingress takes: Kafka's default `message.max.bytes` (1 MiB), so
that an event the embedded broker accepts fits a Kafka broker too."""
_HEADER_SAFE: Final = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ' "%')
"""Printable ASCII but space, `"` and `%` stays as is in a `ce-` header (the HTTP binding's rule)."""
_NEEDS_QUOTING: Final = re.compile("[^" + re.escape(_HEADER_SAFE) + "]")
_ATTRIBUTE_NAME: Final = re.compile(r"[a-z0-9]+")
# Headers of a delivery that are not the event's, and are never copied into `Event.headers`.
_TRACE_HEADERS: Final = ("traceparent", "tracestate")


class EventError(ValueError):
    """The request is not a valid CloudEvent: the ingress answers `status` with this message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def read_event(headers: Mapping[str, str], body: bytes) -> Event:
    """The CloudEvent a request carries, in binary or structured mode; `EventError` says what is wrong.

    `headers` must look names up case-insensitively (aiohttp's and the engine's multi-maps do).
    """
    if len(body) > MAX_EVENT_BYTES:
        raise EventError(f"event is {len(body)} bytes, more than the {MAX_EVENT_BYTES} allowed", 413)
    content_type = headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media == BATCH:
        raise EventError("batched CloudEvents are not accepted: send one event per request")
    if media == STRUCTURED:
        attributes, data = _structured(body)
    elif "ce-specversion" in headers:
        attributes = _binary_attributes(headers)
        if content_type:
            attributes["datacontenttype"] = content_type
        data = body
    else:
        raise EventError(
            "not a CloudEvent: a binary-mode event needs ce-specversion, ce-id, ce-source and ce-type "
            f"headers; a structured one the Content-Type {STRUCTURED}"
        )
    _validate(attributes)
    kept = {name: headers[name] for name in _TRACE_HEADERS if name in headers and _visible(headers[name])}
    return Event(attributes, data, kept)


def _visible(value: str) -> bool:
    """Printable ASCII (and spaces) only: what travels as a header value unescaped."""
    return value.isascii() and value.isprintable()


def _binary_attributes(headers: Mapping[str, str]) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith(CE_PREFIX) and len(lowered) > len(CE_PREFIX):
            attributes[lowered[len(CE_PREFIX) :]] = unquote(value) if "%" in value else value
    return attributes


def _structured(body: bytes) -> tuple[dict[str, str], bytes]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventError(f"structured event is not JSON: {exc}") from None
    except RecursionError:
        raise EventError("structured event is nested too deeply") from None
    if not isinstance(doc, dict):
        raise EventError("structured event must be a JSON object")
    attributes: dict[str, str] = {}
    for name, value in doc.items():
        if name in ("data", "data_base64"):
            continue
        if not _ATTRIBUTE_NAME.fullmatch(name):
            raise EventError(f"attribute name {name!r} must be lower-case letters and digits (CloudEvents)")
        if isinstance(value, bool):
            attributes[name] = "true" if value else "false"
        elif isinstance(value, str | int):
            attributes[name] = str(value)
        elif value is not None:
            raise EventError(f"attribute {name!r} must be a string, an integer or a boolean")
    if "data" in doc and "data_base64" in doc:
        raise EventError("a structured event has `data` or `data_base64`, not both")
    if "data_base64" in doc:
        encoded = doc["data_base64"]
        if not isinstance(encoded, str):
            raise EventError("data_base64 must be a string")
        try:
            return attributes, base64.b64decode(encoded, validate=True)
        except binascii.Error as bad:
            raise EventError(f"data_base64 is not base64: {bad}") from None
    if "data" not in doc or doc["data"] is None:
        return attributes, b""
    data = doc["data"]
    if isinstance(data, str) and not _is_json(attributes.get("datacontenttype")):
        return attributes, data.encode()
    attributes.setdefault("datacontenttype", "application/json")
    return attributes, json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return True  # the structured JSON format's default for `data`
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json") or media == "text/json"


def _validate(attributes: dict[str, str]) -> None:
    if not _visible(attributes.get("datacontenttype", "")):
        raise EventError("datacontenttype must be printable ASCII (it travels as the Content-Type header)")
    version = attributes.get("specversion")
    if version != SPECVERSION:
        raise EventError(f"specversion must be {SPECVERSION!r}, not {version!r}")
    if "id" not in attributes:  # the SDK would make one up (its constructor's default), not refuse
        raise EventError("invalid CloudEvent: the required attribute id is missing")
    when = None
    if "time" in attributes:
        try:
            when = isoparse(attributes["time"])  # as the SDK's HTTP binding reads `ce-time`
        except ValueError as exc:  # a `time` that is not RFC 3339
            raise EventError(f"invalid CloudEvent: time {attributes['time']!r}: {exc}") from None
    # The SDK's verdict on string attributes depends only on their names, on which of them are empty, on
    # `specversion` and on whether `time` has a zone: it is asked once per such shape, not once per event.
    naive = when is not None and not when.tzinfo
    shape = (*((name, bool(value)) for name, value in attributes.items()), naive)
    verdict = _VERDICTS.get(shape)
    if verdict is None:
        verdict = _sdk_verdict(attributes, when)
        if len(_VERDICTS) >= VERDICTS_KEPT:
            _VERDICTS.clear()
        _VERDICTS[shape] = verdict
    if verdict:
        raise EventError(f"invalid CloudEvent: {verdict}")


VERDICTS_KEPT: Final = 1024
"""Attribute shapes whose SDK verdict is remembered (a producer sends few); the memo is emptied past it."""
_VERDICTS: dict[tuple[object, ...], str] = {}
"""The SDK's verdict per attribute shape: "" for valid, else what it found wrong."""


def _sdk_verdict(attributes: dict[str, str], when: datetime | None) -> str:
    typed: dict[str, object] = dict(attributes)
    if when is not None:
        typed["time"] = when
    try:
        CloudEvent(typed, None)
    except BaseCloudEventException as exc:
        return _sdk_message(exc)
    return ""


def _sdk_message(exc: BaseCloudEventException) -> str:
    text = str(exc)
    return text.split(":: ", 1)[1] if ":: " in text else text


def binary_headers(event: Event) -> list[tuple[str, str]]:
    """The headers of `event` delivered in binary mode: `ce-*` per attribute, `Content-Type` for
    `datacontenttype`, then the event's other headers (tracing)."""
    out: list[tuple[str, str]] = []
    for name, value in event.attributes.items():
        if name == "datacontenttype":
            out.append(("Content-Type", value))
        elif _NEEDS_QUOTING.search(value) is None:
            out.append((CE_PREFIX + name, value))  # what `quote` would return unchanged, without the call
        else:
            out.append((CE_PREFIX + name, quote(value, safe=_HEADER_SAFE)))
    out.extend(event.headers.items())
    return out


def is_event(headers: Mapping[str, str]) -> bool:
    """Whether a response (a subscriber's reply) carries a CloudEvent to send back into the broker."""
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media == STRUCTURED or "ce-specversion" in headers
