"""The local platform's state: revisions with their pods and the autoscaler's published status.

One process-wide store, written by the reconciler (revisions), the supervisor (pods) and the platform API
(statuses), read by the platform API's watch, the router and `serving status`. Every change bumps
`version` and wakes the watchers; a watcher that falls behind skips to the newest snapshot, which is all the
watch contract promises. `revisions_version` moves only when revisions or pods change (not on an autoscaler
status), so a watcher of the snapshot can skip versions that did not change it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

from serving.platform import Pod, Revision, RevisionKey, ScalerStatus, Snapshot


class Store:
    def __init__(self) -> None:
        self._revisions: dict[RevisionKey, Revision] = {}
        self._statuses: dict[RevisionKey, ScalerStatus] = {}
        self._routed: frozenset[RevisionKey] = frozenset()
        self._routed_once: set[RevisionKey] = set()
        self._version = 1
        self._revisions_version = 1
        self._changed = asyncio.Event()

    @property
    def version(self) -> int:
        return self._version

    @property
    def revisions_version(self) -> int:
        """The `version` at which revisions or their pods (everything `snapshot` holds) last changed."""
        return self._revisions_version

    def snapshot(self) -> Snapshot:
        return Snapshot(self._version, tuple(self._revisions[k] for k in sorted(self._revisions)))

    def revision(self, key: RevisionKey) -> Revision | None:
        return self._revisions.get(key)

    def revisions(self) -> list[Revision]:
        return [self._revisions[k] for k in sorted(self._revisions)]

    def status(self, key: RevisionKey) -> ScalerStatus | None:
        return self._statuses.get(key)

    def put_revision(self, revision: Revision) -> None:
        """Add a revision or replace its settings; the pods already known are kept."""
        current = self._revisions.get(revision.key)
        pods = current.pods if current is not None else revision.pods
        self._revisions[revision.key] = replace(revision, pods=pods, reachable=self._reachable(revision.key))
        self._bump(revisions=True)

    def set_routed(self, routed: frozenset[RevisionKey]) -> None:
        """The revisions the routes send traffic to now: one that was routed and no longer is becomes
        unreachable (Knative's reachability), so the autoscaler may take it to zero despite its min-scale."""
        self._routed = routed
        self._routed_once |= routed
        changed = False
        for key, revision in list(self._revisions.items()):
            reachable = self._reachable(key)
            if revision.reachable != reachable:
                self._revisions[key] = replace(revision, reachable=reachable)
                changed = True
        if changed:
            self._bump(revisions=True)

    def _reachable(self, key: RevisionKey) -> bool:
        return key in self._routed or key not in self._routed_once

    def remove_revision(self, key: RevisionKey) -> None:
        if self._revisions.pop(key, None) is not None:
            self._statuses.pop(key, None)
            self._routed_once.discard(key)
            self._bump(revisions=True)

    def set_pods(self, key: RevisionKey, pods: tuple[Pod, ...]) -> None:
        current = self._revisions.get(key)
        if current is None or current.pods == pods:
            return
        self._revisions[key] = replace(current, pods=pods)
        self._bump(revisions=True)

    def set_status(self, key: RevisionKey, status: ScalerStatus) -> bool:
        """Record the autoscaler's status; False when the revision is unknown."""
        if key not in self._revisions:
            return False
        if self._statuses.get(key) != status:
            self._statuses[key] = status
            self._bump()
        return True

    async def changes(self) -> AsyncIterator[int]:
        """Yield the current version, then each newer version (skipping those that passed meanwhile)."""
        seen = self._version
        yield seen
        while True:
            while self._version == seen:
                await self._changed.wait()
            seen = self._version
            yield seen

    def _bump(self, *, revisions: bool = False) -> None:
        self._version += 1
        if revisions:
            self._revisions_version = self._version
        # Waking every waiter and handing out a fresh event avoids a Condition's lock on the write path.
        self._changed.set()
        self._changed = asyncio.Event()
