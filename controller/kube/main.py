"""`serving controller --kubernetes`: the controller in a cluster (in-cluster service account, or the file
named by `KUBECONFIG`), configured by the environment variables of `serving.contract.controller`."""

from __future__ import annotations

import asyncio
import logging

import uvloop

from controller.kube.controller import KubeController
from controller.kube.eventing import KubeEventing
from serving import lifecycle
from serving.config import load
from serving.contract.controller import ControllerConfig
from serving.kube.api import Kube
from serving.kube.lease import hold

log = logging.getLogger("controller")

USAGE = (
    "usage: serving controller --kubernetes  (configured by environment variables: SERVING_DOMAIN, "
    "QUEUE_SIDECAR_IMAGE, GC_*, LEADER_ELECT...; KUBECONFIG or the in-cluster service account)"
)


async def run(config: ControllerConfig, terminating: asyncio.Event) -> None:
    kube = await Kube.connect()
    try:
        controller = KubeController(kube, config)
        eventing = KubeEventing(kube, config) if config.eventing else None

        async def work() -> None:
            log.info("controller reconciling Services (domain %s)", config.domain)
            if eventing is None:
                await controller.run()
                return
            async with asyncio.TaskGroup() as group:
                group.create_task(controller.run())
                group.create_task(eventing.write_statuses())

        task = (
            hold(kube, config.system_namespace, "serving-controller", config.pod_name, work)
            if config.leader_elect
            else work()
        )
        # Every replica resolves the Eventing objects and serves them; only the leader writes statuses.
        extra = [eventing.run(), eventing.serve()] if eventing is not None else []
        await lifecycle.supervise(terminating, [task, *extra])
    finally:
        await kube.close()


def main(argv: list[str]) -> int:
    return lifecycle.run_component(
        "controller",
        argv,
        usage=USAGE,
        load=lambda environ: load(ControllerConfig, environ),
        log=lambda config: config,
        main=run,
        loop_factory=uvloop.new_event_loop,
    )
