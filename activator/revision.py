"""Which revision a request is for: the ingress's `Knative-Serving-*` headers, else the Host name.

The Host form is Knative's private cluster-local name `<revision>.<namespace>.svc.<domain>`, for example
`hello-00001.default.svc.cluster.local`, optionally with a port.
"""

from __future__ import annotations

from typing import Protocol

from serving import header
from serving.platform import RevisionKey


class _Headers(Protocol):
    """The part of the engine's `Headers` that identification reads (keeps this module engine-free)."""

    def get(self, name: str, default: str | None = None) -> str | None: ...


def key_from_host(host: str) -> RevisionKey | None:
    """`<rev>.<ns>.svc[.<domain>...][:port]` -> RevisionKey, or None for any other shape."""
    name_part = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    labels = name_part.rstrip(".").split(".")
    if len(labels) < 3 or labels[2] != "svc" or not labels[0] or not labels[1]:
        return None
    return RevisionKey(labels[1], labels[0])


def identify(headers: _Headers) -> RevisionKey | None:
    """The revision a request names, or None if it names none."""
    name = headers.get(header.REVISION)
    namespace = headers.get(header.NAMESPACE)
    if name and namespace:
        return RevisionKey(namespace, name)
    host = headers.get(header.HOST)
    if host:
        return key_from_host(host.lower())
    return None
