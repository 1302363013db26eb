"""The local `Runtime`: a revision the reconciler starts becomes local pods under the supervisor.

Here, and only here, a revision template meets the local pod builder (`podspec`): the pods' processes, their
log folder, the drain quiet period and the environment `serving up` passes on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controller.local.runtime.podspec import PodContext, grace_seconds, pod_processes
from controller.local.runtime.supervisor import RevisionSpec, Supervisor
from controller.local.store import Store
from controller.reconcile.runtime import RevisionStart
from serving.contract.probe import probe_token
from serving.contract.tracing import OFF, Tracing
from serving.platform import RevisionKey


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalSettings:
    log_dir: Path
    """Where each pod's container logs go (`<log_dir>/<pod>/`)."""
    drain_quiet_period: float = 1.0
    """Queue-proxy drain quiet period locally, seconds (Knative hard-codes 30 s; locally a pod stops fast)."""
    host_env: Mapping[str, str] = field(default_factory=dict)
    """The environment of `serving up`, inherited by every pod's processes (PATH, virtualenv...)."""
    probe_secret: str = ""
    """This run's probe secret; each revision's queue-proxies require the token derived from it."""
    tracing: Tracing = OFF
    """Where the pods' queue-proxies send their spans; off by default."""


class LocalRuntime:
    """Implements `controller.reconcile.runtime.Runtime` with the supervisor and the store."""

    def __init__(self, store: Store, supervisor: Supervisor, settings: LocalSettings) -> None:
        self._store = store
        self._supervisor = supervisor
        self._settings = settings

    def add_revision(self, start: RevisionStart) -> None:
        service, revision = start.service, start.revision
        ctx = PodContext(
            namespace=service.namespace,
            service=service.name,
            configuration=revision.configuration,
            revision=revision.key.name,
            template=start.template,
            base_dir=service.base_dir,
            log_dir=self._settings.log_dir,
            drain_quiet_period=self._settings.drain_quiet_period,
            host_env=self._settings.host_env,
            probe_token=probe_token(self._settings.probe_secret, service.namespace, revision.key.name),
            tracing=self._settings.tracing,
        )
        self._supervisor.add(
            RevisionSpec(
                revision=revision,
                initial_scale=start.initial_scale,
                grace=grace_seconds(ctx),
                processes=lambda pod, ports: pod_processes(ctx, pod, ports),
            )
        )

    def remove_revision(self, key: RevisionKey) -> None:
        self._supervisor.remove(key)

    def has_ready_pod(self, key: RevisionKey) -> bool:
        revision = self._store.revision(key)
        return revision is not None and any(p.ready for p in revision.pods)

    def changes(self) -> AsyncIterator[object]:
        return self._store.changes()
