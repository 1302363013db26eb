"""`serving router`: the cluster ingress. Routes come from the `status.traffic` of Route objects, revisions
and their pods from the Kubernetes API (`serving.kube.platform.KubeState`), the routing mode from what the
autoscaler published on each Revision; requests then go through the shared `controller.ingress.Router`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

import uvloop
from aiohttp import web

from controller.ingress.router import Router
from controller.reconcile.routetable import RouteTable, service_routes
from serving import header, lifecycle
from serving.config import load
from serving.contract.router import RouterConfig
from serving.http import Exchange, serve
from serving.kube.api import ROUTES, Kube
from serving.kube.informer import Informer
from serving.kube.platform import KubeState
from serving.route import RouteTarget
from serving.tracer import start_tracing

log = logging.getLogger("router")

USAGE = (
    "usage: serving router  (configured by environment variables: ROUTER_PORT, SERVING_DOMAIN, "
    "CLUSTER_DOMAIN, ACTIVATOR_ADDRESS...)"
)


def route_table(routes: Sequence[Mapping[str, Any]], domain: str, cluster_domain: str) -> RouteTable:
    """The routing table from Route objects' resolved traffic (`status.traffic`): each Service and tag on its
    public host and on its cluster-local names, which the controller's ExternalName Service `{service}`
    sends to this router."""
    found = []
    for obj in routes:
        meta = obj.get("metadata") or {}
        targets = [
            RouteTarget(
                revision=str(t.get("revisionName", "")),
                percent=int(t.get("percent") or 0),
                tag=str(t["tag"]) if t.get("tag") else None,
            )
            for t in (obj.get("status") or {}).get("traffic") or []
            if t.get("revisionName")
        ]
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        found += service_routes(namespace, name, targets, domain, cluster_domain)
    return RouteTable(found)


IN_FLIGHT_LIMIT: Final = 600.0
"""Seconds in-flight requests get to finish once the listener is closed: Knative's longest revision timeout
(`max-revision-timeout-seconds`); the pod's termination grace period must cover the drain plus this."""


SYNC_WAIT: Final = 10.0
"""Seconds a request that arrives before the first listing of Routes, Revisions and pods waits for it (a
router just started or restarted): without them every host would look unknown and get a 404."""


def _admin(ready: asyncio.Event, draining: asyncio.Event) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if draining.is_set():
            return web.Response(status=503, text="draining\n")
        return web.Response(text="ready\n") if ready.is_set() else web.Response(status=503, text="syncing\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def run(config: RouterConfig, terminating: asyncio.Event) -> None:
    tracer = start_tracing(config.tracing, "router")
    kube = await Kube.connect()
    state = KubeState(kube)
    routes = Informer(kube, ROUTES)
    host, _, port = config.activator_address.rpartition(":")
    router = Router(
        state,
        int(port),
        activator_host=host,
        ingress_port=config.port,
        trusted_proxies=tuple(ipaddress.ip_network(c) for c in config.trusted_proxies),
        where="this ingress",
        tracer=tracer,
    )
    ready = asyncio.Event()
    """Set once the routes, revisions and pods are listed."""
    draining = asyncio.Event()

    async def follow_routes() -> None:
        async for _ in routes.changes():
            router.set_table(route_table(routes.items(), config.domain, config.cluster_domain))
            if not ready.is_set():
                await state.synced()
                ready.set()

    async def handle(exchange: Exchange) -> None:
        if not ready.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SYNC_WAIT):
                    await ready.wait()
            if not ready.is_set():
                body = b"the ingress has not read its routes from the Kubernetes API yet; retry in a moment\n"
                headers = (("content-type", "text/plain; charset=utf-8"), (header.RETRY_AFTER, "1"))
                await exchange.respond(503, headers, body)
                return
        await router.handle(exchange)

    def fast(exchange: Exchange) -> bool:
        return ready.is_set() and router.fast(exchange)

    admin = web.AppRunner(_admin(ready, draining), access_log=None, shutdown_timeout=1.0)
    await admin.setup()
    try:
        await web.TCPSite(admin, config.bind_address, config.admin_port).start()
        server = await serve(handle, config.bind_address, config.port, fast=fast)
        log.info(
            "router serving on %s:%d (domain %s, cluster domain %s)",
            config.bind_address,
            server.port,
            config.domain,
            config.cluster_domain,
        )

        async def drain() -> None:
            draining.set()
            log.info("terminating: readiness fails now; serving for %.1fs more", config.drain_timeout)
            await asyncio.sleep(config.drain_timeout)
            log.info("closing the listener; finishing in-flight requests")
            await server.drain(IN_FLIGHT_LIMIT)
            log.info("drained; exiting")

        await lifecycle.supervise(
            terminating, [state.run(), routes.run(), follow_routes(), router.run()], drain
        )
    finally:
        await router.close()
        await admin.cleanup()
        await kube.close()
        if tracer is not None:
            await asyncio.to_thread(tracer.close)


def main(argv: list[str]) -> int:
    return lifecycle.run_component(
        "router",
        argv,
        usage=USAGE,
        load=lambda environ: load(RouterConfig, environ),
        log=lambda config: config,
        main=run,
        loop_factory=uvloop.new_event_loop,
    )
