"""Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas of a component can run: one
acts, the other waits to take over.

`hold` takes the lease (when it is free or its holder stopped renewing for `duration`), then renews it every
`renew` seconds; a replica that cannot renew within `duration` has lost it, and `hold` raises `LeaseLost` so
the process stops acting (and is restarted) rather than act beside a new leader. Writes carry the lease's
resourceVersion, so two candidates cannot both win. A leader that stops (SIGTERM, a rollout) releases the
lease on its way out, so a waiting replica takes over at its next try instead of after `duration`.

`mark_leader` is for components that others reach through a Kubernetes Service (the autoscaler): the leader
labels its own pod, and the Service selects that label, so connections go to the replica that acts.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from serving.kube.api import LEASES, PODS, ApiError, Kube

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

    try:
        async with asyncio.TaskGroup() as group:
            keeper = group.create_task(keep())
            await work()
            keeper.cancel()
    except BaseException:
        await asyncio.shield(_release(kube, namespace, name, identity))
        raise
    await _release(kube, namespace, name, identity)


async def _release(kube: Kube, namespace: str, name: str, identity: str) -> None:
    """Give the lease up if this replica still holds it (best effort: an expired lease frees itself)."""
    try:
        lease: dict[str, Any] = await kube.get(LEASES, namespace, name)
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != identity:
            return
        lease["spec"] = {
            **spec,
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "renewTime": _format(_now()),
        }
        await kube.replace(LEASES, namespace, name, lease)
        log.info("%s released lease %s/%s", identity, namespace, name)
    except ApiError as exc:
        log.warning("releasing lease %s/%s: %s", namespace, name, exc)


LEADER_LABEL: Final = "serving.knative.dev/leader"
"""On the pod of the replica holding a lease; its value is the lease's name."""


async def mark_leader(kube: Kube, namespace: str, pod: str, lease: str) -> None:
    """Label `pod` as the holder of `lease` and take the label off every other pod that carries it (a
    replica that lost the lease, or a leader's restarted container)."""
    await kube.merge_patch(PODS, namespace, pod, {"metadata": {"labels": {LEADER_LABEL: lease}}})
    found = await kube.list(PODS, namespace, label_selector=f"{LEADER_LABEL}={lease}")
    for other in found.get("items", []):
        other_name = other["metadata"]["name"]
        if other_name != pod:
            await kube.merge_patch(
                PODS, namespace, other_name, {"metadata": {"labels": {LEADER_LABEL: None}}}
            )
            log.info("pod %s/%s no longer marked leader of %s", namespace, other_name, lease)
