"""The activator's admin port (aiohttp): Prometheus metrics, liveness and readiness.

`/metrics?name[]=NAME` returns only the named series, as Prometheus' own client servers do: a reader that
wants one gauge (the local platform's live view, every second) does not pay for every histogram.

Readiness fails after SIGTERM (so load balancers stop sending before the listener closes), while the
websocket to the autoscaler is down (requests held here could not wake their revision), and until the
first revision snapshot arrived (every request would be a 404).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class Health:
    """The activator's own readiness, from its parts."""

    def __init__(self, *, autoscaler_connected: Callable[[], bool], synced: Callable[[], bool]) -> None:
        self._autoscaler_connected = autoscaler_connected
        self._synced = synced
        self.draining = False

    def reasons(self) -> list[str]:
        """Why the activator is not ready; empty when it is."""
        found: list[str] = []
        if self.draining:
            found.append("shutting down")
        if not self._synced():
            found.append("no revision snapshot from the platform yet")
        return found

    def degraded(self) -> list[str]:
        """What is wrong without making it unready: with the autoscaler unreachable the activator still
        serves every revision that has pods and holds the others until the link is back (Knative makes the
        activator unready instead, which takes every revision behind it down with the autoscaler)."""
        if self._autoscaler_connected():
            return []
        return ["autoscaler stat connection is down: revisions at zero wait until it is back"]

    def ready(self) -> bool:
        return not self.reasons()


def admin_app(health: Health, registry: CollectorRegistry) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        names = request.query.getall("name[]", [])
        body = generate_latest(registry.restricted_registry(names) if names else registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        reasons = health.reasons()
        if reasons:
            return web.Response(status=503, text="not ready: " + "; ".join(reasons) + "\n")
        degraded = health.degraded()
        if degraded:
            return web.Response(text="ready, degraded: " + "; ".join(degraded) + "\n")
        return web.Response(text="ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
