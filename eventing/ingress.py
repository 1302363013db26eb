"""The Broker ingress: `POST /{namespace}/{broker}` takes one CloudEvent and answers `202` once the Broker's
backend holds it durably (`400` for a bad event, `404` for an unknown Broker, `405` for another method, `413`
when too large, `503` when the backend cannot keep it); webhook sources are served on the same port by Host.

It runs on the platform's forwarding engine (`serving.http`), as the router and the queue-proxy do: HTTP/1.1
with keep-alive and pipelining, and h2c (prior knowledge or `Upgrade`) on the same port.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, Protocol
from urllib.parse import unquote

from eventing.backend import BackendError
from eventing.cloudevent import MAX_EVENT_BYTES, EventError, read_event
from eventing.metrics import EventingMetrics
from eventing.registry import Registry, UnknownBroker
from serving.contract.eventing import WEBHOOK_HOST
from serving.http import Headers, Request

log = logging.getLogger(__name__)

ALLOW: Final = "POST"
RETRY_AFTER: Final = "1"
"""Seconds a producer is told to wait after a `503` (the backend could not keep the event)."""
_TEXT: Final = ("Content-Type", "text/plain; charset=utf-8")
_WEBHOOK_PREFIX: Final = WEBHOOK_HOST.split(".", 1)[0] + "."


class ServedExchange(Protocol):
    """What the ingress uses of an exchange: the engine's `Exchange`, an HTTP/2 stream's (compiled code takes
    a protocol for either, not the engine's class)."""

    @property
    def request(self) -> Request: ...

    async def respond(
        self, status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b""
    ) -> None: ...

    async def read_body(self, limit: int) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete response: a status, a line of text for people (empty for none), and extra headers."""

    status: int
    text: str = ""
    headers: tuple[tuple[str, str], ...] = ()


class Incoming:
    """One request to `/{namespace}/{name}` as a route sees it, whichever HTTP version it came in."""

    __slots__ = ("_exchange", "headers", "method", "name", "namespace")

    def __init__(self, exchange: ServedExchange, namespace: str, name: str) -> None:
        self._exchange = exchange
        self.method = exchange.request.method
        self.headers: Headers = exchange.request.headers
        self.namespace = namespace
        self.name = name

    def header_map(self) -> dict[str, str]:
        return lower_dict(self.headers)

    async def read(self, limit: int) -> bytes | None:
        """The body, or None once it passes `limit` bytes (the rest is not buffered)."""
        return await read_limited(self._exchange, limit)


Webhook = Callable[[Incoming], Awaitable[Answer]]


async def send(exchange: ServedExchange, answer: Answer) -> None:
    headers: list[tuple[str, str]] = list(answer.headers)
    body = b""
    if answer.text:
        headers.append(_TEXT)
        body = (answer.text.rstrip("\n") + "\n").encode()
    await exchange.respond(answer.status, headers, body)


def _route(target: str) -> tuple[str, str] | None:
    """(namespace, name) of a `/{namespace}/{name}` request-target (the query ignored), else None."""
    path = target.split("?", 1)[0]
    parts = path.split("/")
    if len(parts) != 3 or parts[0] or not parts[1] or not parts[2]:
        return None
    namespace, name = parts[1], parts[2]
    return (unquote(namespace) if "%" in namespace else namespace), (unquote(name) if "%" in name else name)


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    return int(value) if value is not None and value.strip().isdigit() else None


def lower_dict(headers: Headers) -> dict[str, str]:
    """The headers by (lower-case) name; of a repeated header, the first."""
    return dict(reversed(headers.items()))


async def read_limited(exchange: ServedExchange, limit: int) -> bytes | None:
    """The request body, or None when it is longer than `limit` bytes: refused unread when its
    Content-Length says so, otherwise as soon as it passes the limit."""
    length = _content_length(exchange.request.headers)
    if length is not None and length > limit:
        return None
    return await exchange.read_body(limit)


class Ingress:
    def __init__(self, registry: Registry, metrics: EventingMetrics, webhook: Webhook | None = None) -> None:
        self._registry = registry
        self._metrics = metrics
        self._webhook = webhook

    async def __call__(self, exchange: ServedExchange) -> None:
        """The engine's handler: one request, answered whole."""
        await send(exchange, await self.answer(exchange))

    async def answer(self, exchange: ServedExchange) -> Answer:
        request = exchange.request
        route = _route(request.target)
        if route is None:
            path = request.target.split("?", 1)[0]
            return Answer(404, f"no broker at {path}: brokers are at /{{namespace}}/{{broker}}")
        namespace, name = route
        host = (request.headers.get("host") or "").split(":", 1)[0].lower()
        if host == WEBHOOK_HOST or host.startswith(_WEBHOOK_PREFIX):
            if self._webhook is None:
                return Answer(404, "no webhook sources here")
            return await self._webhook(Incoming(exchange, namespace, name))
        if request.method != "POST":
            return Answer(405, f"{request.method} is not allowed: POST a CloudEvent", (("Allow", ALLOW),))
        key = (namespace, name)
        if key not in self._registry.brokers:
            return Answer(404, f"broker {namespace}/{name} not found")
        body = await read_limited(exchange, MAX_EVENT_BYTES)
        if body is None:
            self._metrics.broker(namespace, name, "rejected")
            return Answer(413, f"event is larger than the {MAX_EVENT_BYTES} bytes allowed")
        try:
            event = read_event(lower_dict(request.headers), body)
        except EventError as invalid:
            self._metrics.broker(namespace, name, "rejected")
            return Answer(invalid.status, str(invalid))
        try:
            # A producer that goes away mid-write (the engine cancels its handler) does not learn the outcome,
            # but the event is stored and counted all the same (it may send it again: at least once), and a
            # Kafka send is never abandoned half-way: cancelling this future stops only the waiting.
            await self._registry.store(key, [event])
        except UnknownBroker as unknown:
            return Answer(404, str(unknown))
        except BackendError as failure:
            self._metrics.broker(namespace, name, "unavailable")
            log.error("broker %s/%s could not keep event %s: %s", namespace, name, event.id, failure)
            return Answer(
                503, f"the broker could not store the event: {failure}", (("Retry-After", RETRY_AFTER),)
            )
        self._metrics.broker(namespace, name, "accepted")
        return _ACCEPTED


_ACCEPTED: Final = Answer(202)
