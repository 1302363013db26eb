"""Request header rules applied before a request reaches the app (Knative's queue-proxy contract).

Routing headers meant for the data plane are stripped, the activator's `K-Original-Host` becomes `Host`
again, the ingress's `K-Original-User-Agent` becomes `User-Agent` again, and an RFC 7239 `Forwarded` header
is synthesised from `X-Forwarded-*` when the client sent none.
"""

from __future__ import annotations

import re
from typing import Final

from serving import header
from serving.http import Headers

# RFC 7230 token characters; any other value is sent as a quoted-string (RFC 7239 section 4).
_TOKEN: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")

# Headers a rule, the probe check or the request deadline reads (lower-case, as the engine keeps them).
_WATCHED: Final = frozenset(
    {
        header.REVISION,
        header.NAMESPACE,
        header.ORIGINAL_HOST,
        header.ORIGINAL_USER_AGENT,
        header.FORWARDED,
        header.X_FORWARDED_FOR,
        header.X_FORWARDED_HOST,
        header.X_FORWARDED_PROTO,
        header.PROXY_REQUEST,
        header.USER_AGENT,
        header.KUBELET_PROBE,
        header.NETWORK_PROBE,
        header.NETWORK_HASH,
        header.PROBE_TOKEN,
        header.GRPC_TIMEOUT,
    }
)


def _node(value: str) -> str:
    """An RFC 7239 value: IPv6 addresses are bracketed, anything that is not a token is quoted."""
    if _TOKEN.match(value):  # IPv4 addresses, host names without a port, http/https
        return value
    if value.count(":") > 1 and not value.startswith("["):
        value = f"[{value}]"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def forwarded_value(forwarded_for: list[str], host: str | None, proto: str | None) -> str | None:
    """The `Forwarded` value equivalent to `X-Forwarded-For/-Host/-Proto`, or None when none were sent.

    Host and proto describe the first hop, so they join the first `for=` element (as Knative does); the
    other addresses follow as their own elements in order.
    """
    addresses: list[str] = []
    for value in forwarded_for:
        if "," in value:
            addresses.extend(part for part in map(str.strip, value.split(",")) if part)
        elif value := value.strip():
            addresses.append(value)
    first = f"for={_node(addresses[0])}" if addresses else ""
    if host:
        first = f"{first};host={_node(host)}" if first else f"host={_node(host)}"
    if proto:
        first = f"{first};proto={_node(proto)}" if first else f"proto={_node(proto)}"
    if not first:
        return None
    if len(addresses) < 2:
        return first
    return ", ".join([first, *(f"for={_node(address)}" for address in addresses[1:])])


def scan(headers: Headers) -> dict[str, str]:
    """The first value of each header the queue-proxy acts on, found in one pass over the request head.

    One pass with a set lookup per header is cheaper than a lookup per rule on the per-request path.
    """
    seen: dict[str, str] = {}
    for name, value in headers._items:  # read only: `items()` would copy the list
        if name in _WATCHED and name not in seen:
            seen[name] = value
    return seen


def prepare(headers: Headers, seen: dict[str, str]) -> bool:
    """Apply the rules to `headers` in place (`seen` from `scan`); returns whether the activator sent it."""
    if header.REVISION in seen:
        headers.remove(header.REVISION)
    if header.NAMESPACE in seen:
        headers.remove(header.NAMESPACE)
    original_host = seen.get(header.ORIGINAL_HOST)
    if original_host is not None:
        headers.set(header.HOST, original_host)
        headers.remove(header.ORIGINAL_HOST)
    original_agent = seen.get(header.ORIGINAL_USER_AGENT)
    if original_agent is not None:
        headers.set(header.USER_AGENT, original_agent)
        headers.remove(header.ORIGINAL_USER_AGENT)
    if header.FORWARDED not in seen and (
        header.X_FORWARDED_FOR in seen or header.X_FORWARDED_HOST in seen or header.X_FORWARDED_PROTO in seen
    ):
        forwarded = forwarded_value(
            headers.get_all(header.X_FORWARDED_FOR),
            seen.get(header.X_FORWARDED_HOST),
            seen.get(header.X_FORWARDED_PROTO),
        )
        if forwarded is not None:
            headers.add(header.FORWARDED, forwarded)  # `scan` saw none, so adding cannot duplicate
    if header.PROBE_TOKEN in seen:
        headers.remove(header.PROBE_TOKEN)  # a token (right or wrong) is the platform's, never the app's
    proxy_request = seen.get(header.PROXY_REQUEST)
    if proxy_request is not None:
        headers.remove(header.PROXY_REQUEST)  # a hop header of the platform's: the app never sees it
    return proxy_request == header.PROXY_REQUEST_ACTIVATOR
