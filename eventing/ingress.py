"""The Broker ingress: `POST /{namespace}/{broker}` takes one CloudEvent and answers `202` once the Broker's
backend holds it durably (`400` for a bad event, `404` for an unknown Broker, `413` when too large, `503`
when the backend cannot keep it); webhook sources are served on the same port by Host."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from eventing.backend import BackendError
from eventing.cloudevent import MAX_EVENT_BYTES, EventError, read_event
from eventing.github import MAX_BODY_BYTES
from eventing.metrics import EventingMetrics
from eventing.registry import Registry, UnknownBroker
from serving.contract.eventing import WEBHOOK_HOST

log = logging.getLogger(__name__)

ALLOW: Final = "POST"
RETRY_AFTER: Final = "1"
"""Seconds a producer is told to wait after a `503` (the backend could not keep the event)."""

Webhook = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _text(status: int, message: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=message.rstrip("\n") + "\n", headers=headers)


class Ingress:
    def __init__(self, registry: Registry, metrics: EventingMetrics, webhook: Webhook | None = None) -> None:
        self._registry = registry
        self._metrics = metrics
        self._webhook = webhook

    def app(self) -> web.Application:
        # The largest body any route takes: a GitHub webhook's; a Broker's events are held to their own limit.
        app = web.Application(client_max_size=max(MAX_EVENT_BYTES, MAX_BODY_BYTES) + 1)
        app.router.add_route("*", "/{namespace}/{name}", self.handle)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _not_found(self, request: web.Request) -> web.Response:
        return _text(404, f"no broker at {request.path}: brokers are at /{{namespace}}/{{broker}}")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        host = (request.headers.get("Host") or "").split(":", 1)[0].lower()
        if host == WEBHOOK_HOST or host.startswith(WEBHOOK_HOST.split(".", 1)[0] + "."):
            if self._webhook is None:
                return _text(404, "no webhook sources here")
            return await self._webhook(request)
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if request.method != "POST":
            return _text(405, f"{request.method} is not allowed: POST a CloudEvent", Allow=ALLOW)
        key = (namespace, name)
        if key not in self._registry.brokers:
            return _text(404, f"broker {namespace}/{name} not found")
        if request.content_length is not None and request.content_length > MAX_EVENT_BYTES:
            self._metrics.broker(namespace, name, "rejected")
            return _text(413, f"event is larger than the {MAX_EVENT_BYTES} bytes allowed")
        body = await _read_limited(request, MAX_EVENT_BYTES)
        if body is None:
            self._metrics.broker(namespace, name, "rejected")
            return _text(413, f"event is larger than the {MAX_EVENT_BYTES} bytes allowed")
        try:
            event = read_event(request.headers, body)
        except EventError as exc:
            self._metrics.broker(namespace, name, "rejected")
            return _text(exc.status, str(exc))
        try:
            await self._registry.publish(key, [event])
        except UnknownBroker as exc:
            return _text(404, str(exc))
        except BackendError as exc:
            self._metrics.broker(namespace, name, "unavailable")
            log.error("broker %s/%s could not keep event %s: %s", namespace, name, event.id, exc)
            return _text(503, f"the broker could not store the event: {exc}", **{"Retry-After": RETRY_AFTER})
        self._metrics.broker(namespace, name, "accepted")
        return web.Response(status=202)


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it passes `limit` bytes (a chunked body has no length to check
    first; the rest is not buffered)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
