"""Service -> Configuration -> Revisions -> Route, on any platform that implements `Runtime`.

`apply` takes the whole desired set of Services (every file, freshly loaded): a changed template stamps a new
revision and starts its pods; traffic is resolved against the latest *ready* revision, so a new revision takes
its traffic only once one of its pods has passed readiness (as Knative's Route follows
latestReadyRevisionName), and until a Service has any ready revision its traffic goes to the latest one, where
the activator holds requests while it starts. Old revisions stay, scaled to zero by the autoscaler when idle.
An edit that cannot be applied is rejected whole, before anything changes.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from controller.reconcile.routetable import DOMAIN, RouteTable, service_routes
from controller.reconcile.runtime import RevisionStart, Runtime
from serving.autoscaling import DEFAULT, AutoscalerConfig, AutoscalingError, revision_scaling
from serving.platform import Revision, RevisionKey
from serving.route import Configuration, ConfigurationError, RouteError, RouteTarget, resolve_route
from serving.service import Service
from serving.template import RevisionTemplate

log = logging.getLogger(__name__)


class ApplyError(ValueError):
    """The Services cannot be applied (a traffic target names no revision...); `problems` lists each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcilerSettings:
    autoscaler: AutoscalerConfig = DEFAULT
    """Global autoscaler settings, for each revision's initial scale."""
    domain: str = DOMAIN
    """The domain of Service hosts: `{service}.{namespace}.{domain}`."""


@dataclass(slots=True, eq=False)
class ServiceState:
    service: Service
    configuration: Configuration
    ready: set[str] = field(default_factory=set)
    """Revisions that have had a ready pod (Knative's Ready condition stays true when scaled to zero)."""
    targets: list[RouteTarget] = field(default_factory=list)

    @property
    def latest_ready(self) -> str | None:
        latest = self.configuration.latest
        if latest in self.ready:
            return latest
        names = [n for n in self.configuration.revisions if n in self.ready]
        return names[-1] if names else None

    def resolve(self) -> list[RouteTarget]:
        return resolve_route(self.service, self.configuration, self.latest_ready)

    def revision_keys(self) -> list[RevisionKey]:
        return [RevisionKey(self.service.namespace, name) for name in self.configuration.revisions]


def apply_problems(
    services: Sequence[Service],
    current: Mapping[tuple[str, str], ServiceState] | None = None,
    history: Callable[[Service], tuple[Configuration, set[str]]] | None = None,
) -> list[str]:
    """Every problem `apply` would reject `services` for, given the `current` states (none at start-up).

    Applies to copies of the configurations, so nothing changes; `serving up` calls it before starting any
    component, so a traffic target naming a revision that will not exist stops it with exit code 2.
    """
    problems: list[str] = []
    for service in services:
        state = (current or {}).get(service.key)
        if state is not None:
            trial = ServiceState(service, copy.deepcopy(state.configuration), set(state.ready))
        elif history is not None:
            trial = ServiceState(service, *history(service))
        else:
            trial = ServiceState(service, Configuration(service.name))
        try:
            trial.configuration.apply(service.template)
            trial.resolve()
        except ConfigurationError as exc:
            problems.append(f"{service.where}: spec.template.metadata.name: {exc}")
        except RouteError as exc:
            problems += exc.problems
    return problems


class Reconciler:
    def __init__(
        self,
        runtime: Runtime,
        settings: ReconcilerSettings,
        on_routes: Callable[[RouteTable], None],
        *,
        history: Callable[[Service], tuple[Configuration, set[str]]] | None = None,
    ) -> None:
        """`history` gives a Service first seen by this reconciler the revisions it already has (and which of
        them have been ready): a platform that outlives its controller (a cluster) restores them, so a
        restarted controller stamps no revision twice."""
        self._history = history
        self._runtime = runtime
        self._settings = settings
        self._on_routes = on_routes
        self._services: dict[tuple[str, str], ServiceState] = {}

    @property
    def services(self) -> list[ServiceState]:
        return [self._services[k] for k in sorted(self._services)]

    def collect(self, key: RevisionKey) -> None:
        """Remove a revision no route references (revision garbage collection): its pods stop, and it is
        forgotten. Refuses (ConfigurationError) the latest revision and any revision with traffic."""
        state = self._services.get((key.namespace, self._service_of(key)))
        if state is None:
            return
        if any(t.revision == key.name for t in state.targets):
            raise ConfigurationError(f"revision {key} is routed to and cannot be removed")
        state.configuration.forget(key.name)
        state.ready.discard(key.name)
        self._runtime.remove_revision(key)

    def _service_of(self, key: RevisionKey) -> str:
        for (namespace, name), state in self._services.items():
            if namespace == key.namespace and key.name in state.configuration.revisions:
                return name
        return ""

    def apply(self, services: Sequence[Service]) -> list[str]:
        """Make `services` the running set; returns what changed, one line each. Raises `ApplyError`."""
        self._check(services)
        changes: list[str] = []
        wanted = {s.key: s for s in services}
        for key in [k for k in self._services if k not in wanted]:
            gone = self._services.pop(key)
            for revision in gone.revision_keys():
                self._runtime.remove_revision(revision)
            changes.append(f"Service {key[0]}/{key[1]} deleted with its revisions")
        for key, service in wanted.items():
            state = self._services.get(key)
            if state is None:
                configuration, ready = (
                    self._history(service) if self._history else (Configuration(service.name), set())
                )
                state = self._services[key] = ServiceState(service, configuration, ready)
                if not configuration.revisions:
                    changes.append(f"Service {service.namespace}/{service.name} created")
            state.service = service
            name, created = state.configuration.apply(service.template)
            if created:
                self._runtime.add_revision(self._revision_start(service, name, service.template))
                changes.append(f"Revision {service.namespace}/{name} created")
        self._refresh_readiness()
        changes += self._route()
        return changes

    def _check(self, services: Sequence[Service]) -> None:
        problems = apply_problems(services, self._services, self._history)
        if problems:
            raise ApplyError(problems)

    def _revision_start(self, service: Service, name: str, template: RevisionTemplate) -> RevisionStart:
        try:
            scaling = revision_scaling(
                template.annotations, template.container_concurrency, self._settings.autoscaler
            )
            initial = scaling.initial_scale
        except AutoscalingError as exc:
            log.warning("revision %s: %s; starting with 1 pod", name, exc)
            initial = 1
        revision = Revision(
            key=RevisionKey(service.namespace, name),
            service=service.name,
            configuration=service.name,
            container_concurrency=template.container_concurrency,
            timeout_seconds=float(template.timeout_seconds),
            response_start_timeout_seconds=float(template.response_start_timeout_seconds or 0),
            idle_timeout_seconds=float(template.idle_timeout_seconds or 0),
            annotations=dict(template.annotations),
            protocol=template.container.protocol,
        )
        return RevisionStart(service=service, template=template, revision=revision, initial_scale=initial)

    def _refresh_readiness(self) -> list[str]:
        """Mark revisions that have a ready pod; returns one line per revision that just became ready."""
        became: list[str] = []
        for state in self._services.values():
            for key in state.revision_keys():
                if key.name in state.ready:
                    continue
                if self._runtime.has_ready_pod(key):
                    state.ready.add(key.name)
                    became.append(f"Revision {key} is ready")
        return became

    def _route(self) -> list[str]:
        changes: list[str] = []
        routes = []
        for state in self._services.values():
            try:
                targets = state.resolve()
            except RouteError as exc:  # cannot happen after _check; keep the previous route if it does
                log.error("route of %s: %s", state.service.name, exc)
                targets = state.targets
            if targets != state.targets:
                split = ", ".join(f"{t.revision} {t.percent}%" for t in targets if t.percent) or "none"
                changes.append(f"Route {state.service.namespace}/{state.service.name}: {split}")
                state.targets = targets
            routes += service_routes(
                state.service.namespace, state.service.name, targets, self._settings.domain
            )
        self._on_routes(RouteTable(routes))
        return changes

    async def run(self, report: Callable[[list[str]], None]) -> None:
        """Follow pod readiness: move traffic to newly ready revisions; runs until cancelled."""
        async for _ in self._runtime.changes():
            became = self._refresh_readiness()
            if became:
                report(became + self._route())
