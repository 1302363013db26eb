"""Revision garbage collection with the semantics of Knative's `config-gc`.

Only non-active revisions are candidates: a revision is active while a route references it, and the latest
created and latest ready revisions are always kept. Of the candidates, newest-inactive first, the first
`min_non_active` are kept whatever their age; beyond `max_non_active` (when bounded) the rest go whatever
their age; in between, a revision goes once it is older than `retain_since_create` *and* has been inactive
for longer than `retain_since_last_active`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class GcPolicy:
    retain_since_create: float = 48 * 3600.0
    retain_since_last_active: float = 15 * 3600.0
    min_non_active: int = 20
    max_non_active: int = 1000
    """Negative: no upper bound (Knative's `disabled`)."""


@dataclass(frozen=True, slots=True)
class RevisionAge:
    name: str
    created: float
    """Unix time the revision was created."""
    inactive_since: float
    """Unix time it stopped being routed to (its creation time if it never was)."""


def collectable(candidates: Sequence[RevisionAge], now: float, policy: GcPolicy) -> list[str]:
    """The names of the non-active `candidates` to delete now, oldest-inactive last in the order checked."""
    ordered = sorted(candidates, key=lambda r: (r.inactive_since, r.created), reverse=True)
    doomed: list[str] = []
    for index, revision in enumerate(ordered):
        if index < policy.min_non_active:
            continue
        if 0 <= policy.max_non_active <= index:
            doomed.append(revision.name)
            continue
        old = now - revision.created > policy.retain_since_create
        stale = now - revision.inactive_since > policy.retain_since_last_active
        if old and stale:
            doomed.append(revision.name)
    return doomed
