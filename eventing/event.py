"""One CloudEvent as the broker keeps it: its context attributes as strings, and its data as bytes.

Attributes are kept in their wire form (the string a binary-mode `ce-` header carries), so that an event is
delivered with exactly the attributes and the data bytes it arrived with, whatever the content mode of either
side. `datacontenttype` is an attribute like the others here; it travels as `Content-Type`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

SPECVERSION: Final = "1.0"


@dataclass(frozen=True, slots=True)
class Event:
    attributes: dict[str, str]
    """Every context attribute that is set: `id`, `source`, `specversion`, `type`, the optional ones and
    extensions, each as the string a binary-mode header carries."""
    data: bytes = b""
    """The data as bytes (JSON data of a structured event is kept in its JSON text)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Other headers to deliver with the event (Knative keeps none but tracing context)."""

    @property
    def id(self) -> str:
        return self.attributes["id"]

    @property
    def type(self) -> str:
        return self.attributes["type"]

    @property
    def source(self) -> str:
        return self.attributes["source"]
