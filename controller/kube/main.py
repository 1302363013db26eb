"""`serving controller --kubernetes`: the controller in a cluster (in-cluster service account, or the file
named by `KUBECONFIG`), configured by the environment variables of `serving.contract.controller`."""

from __future__ import annotations

import asyncio
import logging

import uvloop

from controller.kube.controller import KubeController
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

        async def work() -> None:
            log.info("controller reconciling Services (domain %s)", config.domain)
            await controller.run()

        task = (
            hold(kube, config.system_namespace, "serving-controller", config.pod_name, work)
            if config.leader_elect
            else work()
        )
        await lifecycle.supervise(terminating, [task])
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
