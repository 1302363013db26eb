"""Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas of a component can run: one
acts, the other waits to take over.

`hold` takes the lease (when it is free or its holder stopped renewing for `duration`), then renews it every
`renew` seconds; a replica that cannot renew within `duration` has lost it, and `hold` raises `LeaseLost` so
the process stops acting (and is restarted) rather than act beside a new leader. Writes carry the lease's
resourceVersion, so two candidates cannot both win.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from serving.kube.api import LEASES, ApiError, Kube

log = logging.getLogger(__name__)

DURATION: Final = 15.0
RENEW: Final = 2.0


class LeaseLost(RuntimeError):
    """The lease could not be renewed in time: another replica may be acting now."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _format(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


async def _try_take(kube: Kube, namespace: str, name: str, identity: str, duration: float) -> bool:
    now = _now()
    spec = {
        "holderIdentity": identity,
        "leaseDurationSeconds": int(duration),
        "acquireTime": _format(now),
        "renewTime": _format(now),
    }
    try:
        lease: dict[str, Any] = await kube.get(LEASES, namespace, name)
    except ApiError as exc:
        if not exc.not_found:
            raise
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name},
            "spec": spec,
        }
        try:
            await kube.create(LEASES, namespace, body)
            return True
        except ApiError as again:
            if again.conflict:
                return False
            raise
    current = lease.get("spec") or {}
    holder = current.get("holderIdentity")
    renewed = _parse(current.get("renewTime"))
    held_for = float(current.get("leaseDurationSeconds") or duration)
    if holder and holder != identity and renewed is not None and (now - renewed).total_seconds() < held_for:
        return False
    if holder == identity:
        spec["acquireTime"] = current.get("acquireTime") or spec["acquireTime"]
    lease["spec"] = {**current, **spec}
    try:
        await kube.replace(LEASES, namespace, name, lease)
    except ApiError as exc:
        if exc.conflict:
            return False
        raise
    return True


async def hold(
    kube: Kube,
    namespace: str,
    name: str,
    identity: str,
    work: Callable[[], Awaitable[None]],
    *,
    duration: float = DURATION,
    renew: float = RENEW,
) -> None:
    """Wait to take the lease, then run `work()` while renewing it; raises `LeaseLost` if renewal fails."""
    while True:
        try:
            if await _try_take(kube, namespace, name, identity, duration):
                break
        except ApiError as exc:
            log.warning("lease %s/%s: %s", namespace, name, exc)
        await asyncio.sleep(renew)
    log.info("%s leads (lease %s/%s)", identity, namespace, name)

    async def keep() -> None:
        last = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(renew)
            try:
                if await _try_take(kube, namespace, name, identity, duration):
                    last = asyncio.get_running_loop().time()
                    continue
            except ApiError as exc:
                log.warning("renewing lease %s/%s: %s", namespace, name, exc)
            if asyncio.get_running_loop().time() - last > duration:
                raise LeaseLost(f"lease {namespace}/{name} not renewed for {duration:.0f}s")

    async with asyncio.TaskGroup() as group:
        keeper = group.create_task(keep())
        await work()
        keeper.cancel()
