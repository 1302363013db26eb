"""What the reconciler needs of a platform: run a revision's pods, remove them, and say when pods are ready.

`serving up` implements it with local processes (`controller.local.runtime.revisions`); a cluster would with
Deployments. The reconciler never learns how pods run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from serving.platform import Revision, RevisionKey
from serving.service import Service
from serving.template import RevisionTemplate


@dataclass(frozen=True, slots=True, kw_only=True)
class RevisionStart:
    """A new immutable revision to run."""

    service: Service
    """The Service it was stamped from (namespace, name, the folder of its file)."""
    template: RevisionTemplate
    """`spec.template` as it was when the revision was stamped."""
    revision: Revision
    """Its key and the settings the data plane reads."""
    initial_scale: int
    """Pods to run until the autoscaler says otherwise (`autoscaling.knative.dev/initial-scale`, 1)."""


class Runtime(Protocol):
    """A platform's side of reconciling; implemented by `controller.local` (and later `controller.kube`)."""

    def add_revision(self, start: RevisionStart) -> None:
        """Start running a new revision's pods."""

    def remove_revision(self, key: RevisionKey) -> None:
        """Stop a revision's pods (they drain) and forget it."""

    def has_ready_pod(self, key: RevisionKey) -> bool:
        """Whether one of the revision's pods is ready now."""

    def changes(self) -> AsyncIterator[object]:
        """Yields whenever pods or their readiness may have changed; runs until cancelled."""
