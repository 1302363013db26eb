"""A component's platform client from its `SERVING_PLATFORM_URL`: the Kubernetes API for `kubernetes`, else
the local platform API at that URL. The Kubernetes client is imported only when it is used, so a component
of `serving up` starts without it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp

from serving.contract.platform import is_kubernetes
from serving.platform import PlatformClient
from serving.platformclient import HttpPlatform


@contextlib.asynccontextmanager
async def connect(
    platform_url: str, session: aiohttp.ClientSession, *, pod_start_times: bool = False
) -> AsyncIterator[PlatformClient]:
    """`pod_start_times`: on Kubernetes, also watch the revision pods for their start times (the
    autoscaler's scraper and scale-in use them; the local platform always reports them)."""
    if not is_kubernetes(platform_url):
        yield HttpPlatform(platform_url, session)
        return
    from serving.kube.api import Kube
    from serving.kube.platform import KubePlatform

    kube = await Kube.connect()
    try:
        yield KubePlatform(kube, pod_start_times=pod_start_times)
    finally:
        await kube.close()
