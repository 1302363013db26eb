"""`serving eventing`: wires config, the Brokers' backends, the Trigger dispatchers, the ingress, the sources
and the admin port, then follows the platform's Eventing objects until SIGTERM/SIGINT.

Shutdown: the ingress stops taking events, the dispatchers stop (deliveries in flight are not acknowledged, so
they are delivered again after a restart), and the backends flush what they acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import uvloop
from aiohttp import web
from prometheus_client import CollectorRegistry

from eventing.admin import admin_app
from eventing.backend import Backend
from eventing.config import EventingConfig, load_config
from eventing.delivery import Deliverer
from eventing.ingress import Ingress
from eventing.metrics import EventingMetrics
from eventing.registry import Registry
from eventing.session import client_session
from eventing.sources import Sources
from eventing.store import EventStore
from eventing.watch import watch_spec
from serving import lifecycle
from serving.contract.eventing import BrokerSpec, EventingSpec, split_address
from serving.http import Server, serve

log = logging.getLogger("eventing")

KAFKA_TIMEOUT = 10.0
"""Seconds any wait on Kafka may take: a producer posting while Kafka is unreachable gets its 503 (and
retries) after this, rather than holding its connection for the client's default 30 s."""
INGRESS_DRAIN = 1.0
"""Seconds the ingress gives the events it is storing at shutdown before it closes their connections."""


def _quiet_kafka_client() -> None:
    """aiokafka logs every failed reconnect at ERROR, many a second while Kafka is down; the backend reports
    what matters (a publish or a read that failed) itself."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def _kafka(broker: BrokerSpec) -> Backend:
    from eventing.kafka import KafkaBackend  # only Kafka Brokers load aiokafka

    if not broker.bootstrap_servers:
        raise ValueError(f"broker {broker.namespace}/{broker.name} has no bootstrap.servers")
    return KafkaBackend(
        broker.bootstrap_servers,
        partitions=broker.partitions,
        replication_factor=broker.replication_factor,
        timeout=KAFKA_TIMEOUT,
    )


def aliases(spec: EventingSpec, config: EventingConfig) -> dict[str, tuple[str, int]]:
    """Where the platform's own addresses connect: its Brokers to this component's port, its Services to
    `INGRESS_ADDRESS` (the router) when set; the Host stays the address's, as the router and the ingress
    route by it."""
    own = config.bind_address if config.bind_address not in ("0.0.0.0", "::", "") else "127.0.0.1"
    found = {host: (own, config.port) for host in spec.broker_hosts}
    if config.ingress_address:
        ingress = split_address(config.ingress_address)
        found.update({host: ingress for host in spec.service_hosts})
    return found


async def run(config: EventingConfig, terminating: asyncio.Event) -> None:
    _quiet_kafka_client()
    prometheus = CollectorRegistry()
    metrics = EventingMetrics(prometheus)
    store = EventStore(Path(config.data_dir))
    await store.start()
    async with client_session() as session:
        deliverer = Deliverer(session)
        registry = Registry(store, deliverer, metrics, kafka=_kafka)
        sources = Sources(deliverer)
        admin = web.AppRunner(admin_app(registry, sources, prometheus), access_log=None, shutdown_timeout=1.0)
        await admin.setup()
        ingress: Server | None = None
        try:
            await web.TCPSite(admin, config.bind_address, config.admin_port).start()
            handler = Ingress(registry, metrics, sources.webhook)
            ingress = await serve(handler, config.bind_address, config.port)
            log.info(
                "eventing: broker ingress on %s:%d, admin on :%d, data in %s",
                config.bind_address,
                config.port,
                config.admin_port,
                config.data_dir,
            )

            async def follow() -> None:
                async for spec in watch_spec(session, config.platform_url, config.token):
                    deliverer.set_aliases(aliases(spec, config))
                    await registry.apply(spec)
                    sources.apply(spec)

            async def shutdown() -> None:
                await registry.stop_delivering()  # first: nothing in flight is acknowledged from here on
                assert ingress is not None
                await ingress.drain(INGRESS_DRAIN)

            await lifecycle.supervise(terminating, [follow(), sources.run(), registry.run()], shutdown)
        finally:
            if ingress is not None:
                ingress.close()
                await ingress.wait_closed()
            await registry.close()
            deliverer.close()
            await admin.cleanup()


def main(argv: list[str]) -> int:
    return lifecycle.run_component(
        "eventing",
        argv,
        usage="usage: serving eventing  (configured by environment variables; see docs/eventing.md)",
        load=load_config,
        log=lambda config: config,
        main=run,
        loop_factory=uvloop.new_event_loop,
    )
