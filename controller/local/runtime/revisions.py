"""The local `Runtime`: a revision the reconciler starts becomes local pods under the supervisor.

Here, and only here, a revision template meets the local pod builder (`podspec`): the pods' processes, their
log folder, the drain quiet period and the environment `serving up` passes on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from controller.local.runtime.container import AUTO, ContainerRuntime, runs_as_container
from controller.local.runtime.podspec import PodContext, grace_seconds, pod_processes
from controller.local.runtime.supervisor import RevisionSpec, Supervisor
from controller.local.runtime.volume import VolumeSet
from controller.local.store import Store
from controller.reconcile.runtime import RevisionStart
from serving.configdata import ConfigData
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
    runtime_choice: str = AUTO
    """`serving up --runtime`: which user containers run from their image (`runs_as_container`)."""
    container_runtime: ContainerRuntime | None = None
    """The runtime that runs them; None when none was needed or none works (validation refused those)."""
    state_dir: Path | None = None
    """`serving up`'s state folder, which names and labels its containers."""


VOLUME_DIR: Final = "volumes"
"""Under the state folder: each container pod's ConfigMap, Secret, projected and emptyDir volumes."""


class LocalRuntime:
    """Implements `controller.reconcile.runtime.Runtime` with the supervisor and the store."""

    def __init__(self, store: Store, supervisor: Supervisor, settings: LocalSettings) -> None:
        self._store = store
        self._supervisor = supervisor
        self._settings = settings
        self.container_runtime = settings.container_runtime
        """The runtime for container pods; set later when an edit first needs one."""
        self._configs: dict[tuple[str, str, str], ConfigData] = {}
        self._bindings: dict[tuple[str, str], dict[str, str]] = {}
        self._volumes = VolumeSet(settings.state_dir / VOLUME_DIR) if settings.state_dir is not None else None

    @property
    def volumes(self) -> VolumeSet | None:
        """The volumes of every container pod (and ContainerSource run from its image); None without a state
        folder."""
        return self._volumes

    def set_configs(self, configs: Iterable[ConfigData]) -> list[str]:
        """The ConfigMaps and Secrets now defined: pods read their env from these at each start (as in
        Knative, a change makes no new revision). Returns what changed, one line each, no values."""
        new = {c.key: c for c in configs}
        old, self._configs = self._configs, new
        lines = [f"{kind} {ns}/{name} deleted" for kind, ns, name in sorted(old.keys() - new.keys())]
        for key in sorted(new):
            kind, ns, name = key
            if key not in old:
                lines.append(f"{kind} {ns}/{name} created")
            elif old[key].data != new[key].data:
                lines.append(f"{kind} {ns}/{name} changed (pods read it when they start)")
        if lines:
            self._supervisor.configs_changed()
        if self._volumes is not None and lines:
            lines += [f"volume {where} updated in place" for where in self._volumes.refresh(self.find_config)]
        return lines

    def set_bindings(self, bindings: dict[tuple[str, str], dict[str, str]]) -> list[str]:
        """The SinkBindings' variables per Service (namespace, name): pods read them when they start. Returns
        what changed, one line each."""
        old, self._bindings = self._bindings, bindings
        lines = []
        for key in sorted(old.keys() | bindings.keys()):
            if old.get(key) != bindings.get(key):
                sink = bindings[key]["K_SINK"] if key in bindings else "nothing"
                lines.append(f"Service {key[0]}/{key[1]} bound to {sink} (pods read it when they start)")
        if lines:
            self._supervisor.configs_changed()
        return lines

    def binding(self, namespace: str, service: str) -> dict[str, str]:
        return self._bindings.get((namespace, service), {})

    def find_config(self, kind: str, namespace: str, name: str) -> ConfigData | None:
        return self._configs.get((kind, namespace, name))

    def add_revision(self, start: RevisionStart) -> None:
        service, revision = start.service, start.revision
        settings = self._settings
        container = start.template.container
        image = runs_as_container(settings.runtime_choice, container.image, container.command)
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
            runtime=self.container_runtime if image else None,
            state_dir=settings.state_dir,
            configs=self.find_config,
            volumes=self._volumes,
            binding=self.binding,
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
