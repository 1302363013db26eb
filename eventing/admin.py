"""The eventing component's admin port (aiohttp): Prometheus metrics, liveness, readiness (the Eventing
objects were read once), and `/status`, the delivery counts `serving status` shows."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from eventing.registry import Registry
from eventing.sources import Sources


def admin_app(registry: Registry, sources: Sources, prometheus: CollectorRegistry) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(prometheus)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if not registry.synced:
            return web.Response(status=503, text="the Eventing objects were not read yet\n")
        return web.Response(text="ok\n")

    async def status(request: web.Request) -> web.Response:
        return web.json_response({**registry.status(), **sources.status()})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    return app
