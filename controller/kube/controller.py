"""`serving controller --kubernetes`: Knative Services in the cluster, reconciled by the shared reconciler.

One loop: the informers (Services, Revisions, Deployments, core Services and the revisions' EndpointSlices)
mark the state dirty; each pass parses every Service object, feeds the valid ones to
`controller.reconcile.Reconciler` (an invalid edit keeps the last valid spec running and says why in the
Service's status), makes the objects new revisions need (Configuration, Revision, Deployment, private Service,
Route and its ExternalName Service) and writes every status as `kubectl get ksvc` users expect. A restarted
controller reads back the revisions that exist, so it stamps none twice. A failed API call is retried on the
next pass, with backoff.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from controller.kube import resources
from controller.kube.labels import (
    CONFIGURATION,
    CONFIGURATION_GENERATION,
    DIGEST,
    REVISION,
    ROUTING_STATE,
    ROUTING_STATE_MODIFIED,
)
from controller.reconcile.gc import GcPolicy, RevisionAge, collectable
from controller.reconcile.reconciler import (
    ApplyError,
    Reconciler,
    ReconcilerSettings,
    ServiceState,
    apply_problems,
)
from controller.reconcile.routetable import RouteTable, cluster_local_host, service_host, tag_host
from controller.reconcile.runtime import RevisionStart
from serving.autoscaling import DEFAULT, AutoscalerConfig
from serving.contract.controller import ControllerConfig
from serving.kube.api import (
    CONFIGURATIONS,
    CORE_SERVICES,
    DEPLOYMENTS,
    ENDPOINT_SLICES,
    JSON,
    REVISIONS,
    ROUTES,
    SERVICES,
    ApiError,
    Kube,
    Resource,
)
from serving.kube.informer import Informer
from serving.kube.platform import deployment_name, pods_of, private_service_name
from serving.platform import RevisionKey
from serving.route import Configuration, ConfigurationError
from serving.service import Service, ServiceFileError, object_problem, parse_object
from serving.template import RevisionTemplate, parse_template
from serving.validation import FieldReader

log = logging.getLogger(__name__)

RETRY_FIRST: Final = 0.5
RETRY_MAX: Final = 30.0


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def condition(
    kind: str, status: str, reason: str, message: str, previous: Sequence[Mapping[str, Any]] | None
) -> JSON:
    """A status condition; its `lastTransitionTime` moves only when its status does."""
    before = next((c for c in previous or [] if c.get("type") == kind), None)
    when = before.get("lastTransitionTime") if before and before.get("status") == status else None
    found: JSON = {"type": kind, "status": status, "lastTransitionTime": when or _now()}
    if reason:
        found["reason"] = reason
    if message:
        found["message"] = message
    return found


_SEVERITY: Final = ("False", "Unknown", "True")


def worst(*parts: tuple[str, str, str]) -> tuple[str, str, str]:
    """Of (status, reason, message) conditions, the first with the worst status (False, then Unknown, then
    True): a Service's Ready from its ConfigurationsReady and RoutesReady, as Knative's condition sets do."""
    return min(parts, key=lambda part: _SEVERITY.index(part[0]))


class StatusWriter:
    """Writes objects' `status` subresources, skipping a write of what it wrote last (a pass that changes
    nothing costs no API call); an object deleted meanwhile is skipped."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube
        self._written: dict[tuple[str, str, str], JSON] = {}

    async def patch(self, resource: Resource, namespace: str, name: str, status: JSON) -> None:
        key = (resource.plural, namespace, name)
        if self._written.get(key) == status:
            return
        try:
            await self._kube.merge_patch(resource, namespace, name, {"status": status}, sub="status")
        except ApiError as exc:
            if exc.not_found:
                return
            raise
        self._written[key] = status

    def forget(self, resource: Resource, namespace: str, name: str) -> None:
        self._written.pop((resource.plural, namespace, name), None)


@dataclass(slots=True)
class _Pending:
    start: RevisionStart
    generation: int


class KubeRuntime:
    """The reconciler's `Runtime` on a cluster: new revisions are queued and made by the controller's pass;
    readiness is read from the EndpointSlices of each revision's private Service."""

    def __init__(self, slices: Informer) -> None:
        self._slices = slices
        self.to_add: list[RevisionStart] = []
        self.to_remove: list[RevisionKey] = []

    def add_revision(self, start: RevisionStart) -> None:
        self.to_add.append(start)

    def remove_revision(self, key: RevisionKey) -> None:
        self.to_remove.append(key)

    def has_ready_pod(self, key: RevisionKey) -> bool:
        service = private_service_name(key.name)
        slices = [
            s
            for s in self._slices.cache.values()
            if s["metadata"].get("namespace") == key.namespace
            and (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == service
        ]
        return any(pod.ready for pod in pods_of(slices))

    async def changes(self) -> Any:  # the controller's pass follows the informers itself
        async for _ in self._slices.changes():
            yield None


class KubeController:
    def __init__(self, kube: Kube, config: ControllerConfig, autoscaler: AutoscalerConfig = DEFAULT) -> None:
        self._kube = kube
        self._config = config
        self._autoscaler = autoscaler
        self.services = Informer(kube, SERVICES)
        self.revisions = Informer(kube, REVISIONS)
        self.deployments = Informer(kube, DEPLOYMENTS, label_selector=REVISION)
        self.slices = Informer(kube, ENDPOINT_SLICES, label_selector=REVISION)
        self.core_services = Informer(kube, CORE_SERVICES)
        """Every core Service, not only the controller's: a Route's name may be taken by another's Service."""
        self.runtime = KubeRuntime(self.slices)
        self.reconciler = Reconciler(
            self.runtime,
            ReconcilerSettings(autoscaler=autoscaler, domain=config.domain),
            self._on_routes,
            history=self._history,
        )
        self._dirty = asyncio.Event()
        self._last_good: dict[tuple[str, str], Service] = {}
        self._problems: dict[tuple[str, str], list[str]] = {}
        self._owners: dict[tuple[str, str, str], JSON] = {}
        """Objects this controller applied (kind, namespace, name) -> as the server returned them."""
        self._applied: dict[tuple[str, str, str], JSON] = {}
        """What was last applied per object, so an unchanged spec is not sent again."""
        self._statuses = StatusWriter(kube)
        self._not_owned: dict[tuple[str, str], str] = {}
        """Services whose name is taken by a core Service of someone else's -> why, for the Route's status."""
        self._pending: list[_Pending] = []
        self._removing: list[RevisionKey] = []
        self.passes = 0

    def _on_routes(self, table: RouteTable) -> None:
        """Routes are published as Route objects' status (read by the ingress), not pushed."""

    # -- the revisions a Service already has, for a restarted controller --------------------------------
    def _history(self, service: Service) -> tuple[Configuration, set[str]]:
        configuration = Configuration(service.name)
        ready: set[str] = set()
        for obj in self.revisions.cache.values():
            meta = obj.get("metadata") or {}
            labels = meta.get("labels") or {}
            if meta.get("namespace") != service.namespace or labels.get(CONFIGURATION) != service.name:
                continue
            template = _template_of(obj)
            digest = (meta.get("annotations") or {}).get(DIGEST)
            if template is None or not digest:
                continue
            try:
                generation = int(labels.get(CONFIGURATION_GENERATION, "0"))
            except ValueError:
                generation = 0
            configuration.restore(str(meta["name"]), template, str(digest), generation)
            conditions = (obj.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                ready.add(str(meta["name"]))
        return configuration, ready

    # -- the loop ----------------------------------------------------------------------------------------
    async def run(self) -> None:
        informers = (self.services, self.revisions, self.deployments, self.slices, self.core_services)
        async with asyncio.TaskGroup() as group:
            for informer in informers:
                group.create_task(informer.run())
                group.create_task(self._follow(informer))
            for informer in informers:
                await informer.synced.wait()
            delay = RETRY_FIRST
            while True:
                await self._dirty.wait()
                self._dirty.clear()
                try:
                    await self.sync()
                    delay = RETRY_FIRST
                except ApiError as exc:
                    log.warning("reconcile pass failed: %s; retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    self._dirty.set()

    async def _follow(self, informer: Informer) -> None:
        async for _ in informer.changes():
            self._dirty.set()

    async def sync(self) -> None:
        """One pass: parse, reconcile, make what is missing, write statuses."""
        self.passes += 1
        services = self._valid_services()
        try:
            changes = self.reconciler.apply(services)
        except ApplyError as exc:  # checked per Service above; a bug if it happens
            log.error("apply failed: %s", exc)
            return
        for line in changes:
            log.info("%s", line)
        self._pending += [_Pending(s, self._generation(s)) for s in self.runtime.to_add]
        self._removing += self.runtime.to_remove
        self.runtime.to_add.clear()
        self.runtime.to_remove.clear()
        for state in self.reconciler.services:
            await self._ensure_service_objects(state)
        live = {state.service.key for state in self.reconciler.services}
        for gone in [k for k in self._not_owned if k not in live]:
            del self._not_owned[gone]
        while self._pending:
            await self._make_revision(self._pending[0])
            self._pending.pop(0)
        while self._removing:
            key = self._removing[0]
            await self._kube.delete(REVISIONS, key.namespace, key.name)
            self._removing.pop(0)
        await self._repair_revisions()
        await self._write_statuses()
        await self._collect_garbage()

    def _generation(self, start: RevisionStart) -> int:
        for state in self.reconciler.services:
            if state.service.key == start.service.key:
                return state.configuration.generation
        return 1

    def _valid_services(self) -> list[Service]:
        current = {s.service.key: s for s in self.reconciler.services}
        found: list[Service] = []
        seen: set[tuple[str, str]] = set()
        for key, obj in sorted(self.services.cache.items()):
            if (obj.get("metadata") or {}).get("deletionTimestamp"):
                continue
            seen.add(key)
            try:
                service = parse_object(obj, self._autoscaler)
                where = f"Service {key[0]}/{key[1]}"
                problems = [
                    object_problem(p, where) for p in apply_problems([service], current, self._history)
                ]
            except ServiceFileError as exc:
                problems = exc.problems
                service = None
            if problems or service is None:
                if self._problems.get(key) != problems:
                    log.warning("Service %s/%s is invalid: %s", *key, "; ".join(problems))
                self._problems[key] = problems
                kept = self._last_good.get(key)
                if kept is not None:
                    found.append(kept)
                continue
            self._problems.pop(key, None)
            self._last_good[key] = service
            found.append(service)
        for key in [k for k in self._last_good if k not in seen]:
            del self._last_good[key]
        for key in [k for k in self._problems if k not in seen]:
            del self._problems[key]
        return found

    # -- making objects ----------------------------------------------------------------------------------
    async def _apply(self, resource: Resource, obj: JSON) -> JSON:
        key = (resource.plural, obj["metadata"]["namespace"], obj["metadata"]["name"])
        if self._applied.get(key) == obj and key in self._owners:
            return self._owners[key]
        result = await self._kube.apply(resource, obj)
        self._applied[key] = copy.deepcopy(obj)
        self._owners[key] = result
        return result

    async def _ensure_service_objects(self, state: ServiceState) -> None:
        service = state.service
        owner = self.services.get(service.namespace, service.name)
        if owner is None:
            return
        await self._apply(CONFIGURATIONS, resources.configuration(service, owner))
        route_obj = await self._apply(ROUTES, resources.route(service, owner))
        await self._ensure_cluster_local_service(service, route_obj)

    async def _ensure_cluster_local_service(self, service: Service, route_obj: JSON) -> None:
        """Make or update the Route's ExternalName Service `{service}`, unless that name is another's.

        Apply forces its fields onto whatever object has the name, so a name not seen yet is created instead
        (a 409 means it exists: it is read to see whose it is); only one the Route controls is applied."""
        desired = resources.cluster_local_service(service, route_obj, self._config)
        ns, name = service.namespace, service.name
        existing = self.core_services.get(ns, name)
        if existing is None:
            try:
                created = await self._kube.create(CORE_SERVICES, ns, desired)
            except ApiError as exc:
                if not exc.conflict:
                    raise
                existing = await self._kube.get(CORE_SERVICES, ns, name)
            else:
                key = (CORE_SERVICES.plural, ns, name)
                self._applied[key] = copy.deepcopy(desired)
                self._owners[key] = created
                self._not_owned.pop(service.key, None)
                return
        if not resources.controlled_by(existing, route_obj):
            if service.key not in self._not_owned:
                log.warning(
                    "Service %s/%s: the core Service of that name is not the Route's; left as it is", ns, name
                )
            self._not_owned[service.key] = (
                f"There is an existing placeholder Service {name!r} that we do not own: "
                "delete it to give the Service its cluster-local address"
            )
            return
        self._not_owned.pop(service.key, None)
        if (existing.get("spec") or {}).get("externalName") != desired["spec"]["externalName"]:
            self._applied.pop((CORE_SERVICES.plural, ns, name), None)  # changed by hand: apply again
        await self._apply(CORE_SERVICES, desired)

    async def _make_revision(self, pending: _Pending) -> None:
        start = pending.start
        service = start.service
        config_obj = self._owners.get((CONFIGURATIONS.plural, service.namespace, service.name))
        if config_obj is None:
            return  # the Service went away before its revision was made
        name = start.revision.key.name
        revision_obj = await self._apply(
            REVISIONS, resources.revision(service, name, pending.generation, start.template, config_obj)
        )
        await self._create(
            DEPLOYMENTS,
            resources.deployment(service, revision_obj, start.template, start.initial_scale, self._config),
        )
        await self._create(CORE_SERVICES, resources.private_service(service, revision_obj))

    async def _create(self, resource: Resource, obj: JSON) -> None:
        """Create once: a revision's Deployment is never updated (its replicas belong to the autoscaler)."""
        try:
            await self._kube.create(resource, obj["metadata"]["namespace"], obj)
        except ApiError as exc:
            if exc.status != 409:
                raise

    async def _repair_revisions(self) -> None:
        """A Revision whose Deployment or private Service is missing (deleted by hand, or the controller
        stopped half-way) gets them again, at zero replicas: the activator wakes it on demand."""
        deployments = {
            (d["metadata"]["namespace"], d["metadata"]["name"]) for d in self.deployments.cache.values()
        }
        for state in self.reconciler.services:
            service = state.service
            for name, template in state.configuration.revisions.items():
                if (service.namespace, deployment_name(name)) in deployments:
                    continue
                obj = self.revisions.get(service.namespace, name) or self._owners.get(
                    (REVISIONS.plural, service.namespace, name)
                )
                if obj is None or "uid" not in (obj.get("metadata") or {}):
                    continue
                log.info("revision %s/%s has no Deployment: making it", service.namespace, name)
                await self._create(DEPLOYMENTS, resources.deployment(service, obj, template, 0, self._config))
                await self._create(CORE_SERVICES, resources.private_service(service, obj))

    # -- status ------------------------------------------------------------------------------------------
    async def _patch_status(self, resource: Resource, namespace: str, name: str, status: JSON) -> None:
        await self._statuses.patch(resource, namespace, name, status)

    async def _write_statuses(self) -> None:
        domain = self._config.domain
        for key, problems in self._problems.items():
            if key in self._last_good:
                continue  # a Service with a running spec gets its status below
            obj = self.services.get(*key)
            previous = ((obj or {}).get("status") or {}).get("conditions")
            message = "; ".join(problems)
            await self._patch_status(
                SERVICES,
                key[0],
                key[1],
                {
                    "observedGeneration": ((obj or {}).get("metadata") or {}).get("generation", 0),
                    "conditions": [
                        condition("ConfigurationsReady", "False", "InvalidSpec", message, previous),
                        condition("RoutesReady", "False", "InvalidSpec", message, previous),
                        condition("Ready", "False", "InvalidSpec", message, previous),
                    ],
                },
            )
        for state in self.reconciler.services:
            await self._write_service_status(state, domain)

    async def _write_service_status(self, state: ServiceState, domain: str) -> None:
        service = state.service
        ns, name = service.namespace, service.name
        obj = self.services.get(ns, name)
        if obj is None:
            return
        latest = state.configuration.latest
        latest_ready = state.latest_ready
        host = service_host(name, ns, domain)
        urls = {t.tag: f"http://{tag_host(t.tag, name, ns, domain)}" for t in state.targets if t.tag}
        traffic = resources.traffic_status(service, state.targets, urls)
        problems = self._problems.get(service.key)
        for revision_name in state.configuration.revisions:
            await self._write_revision_status(ns, revision_name, revision_name in state.ready)
        config_ready = latest is not None and latest == latest_ready
        previous = (obj.get("status") or {}).get("conditions")
        if problems:
            reason, message, status = "InvalidSpec", "; ".join(problems), "False"
        elif config_ready:
            reason, message, status = "", "", "True"
        else:
            reason = "RevisionMissing"
            message = f"Revision {latest!r} is not ready yet" if latest else "no revision yet"
            status = "Unknown"
        route_ready = bool(state.targets) and latest_ready is not None
        not_owned = self._not_owned.get(service.key)
        address: JSON | None = {"url": f"http://{cluster_local_host(name, ns, self._config.cluster_domain)}"}
        if not_owned:
            route_status, route_reason, route_message = "False", "NotOwned", not_owned
            address = None  # the name answers for another Service: merge-patching None removes the address
        elif route_ready:
            route_status, route_reason, route_message = "True", "", ""
        else:
            route_status, route_reason, route_message = "Unknown", "RevisionMissing", ""
        config_obj = self._owners.get((CONFIGURATIONS.plural, ns, name)) or {}
        route_obj = self._owners.get((ROUTES.plural, ns, name)) or {}
        common = {"latestCreatedRevisionName": latest, "latestReadyRevisionName": latest_ready}
        await self._patch_status(
            CONFIGURATIONS,
            ns,
            name,
            {
                **common,
                "observedGeneration": (config_obj.get("metadata") or {}).get("generation", 0),
                "conditions": [
                    condition(
                        "Ready",
                        "True" if config_ready else "Unknown",
                        "" if config_ready else "RevisionMissing",
                        "",
                        None,
                    )
                ],
            },
        )
        await self._patch_status(
            ROUTES,
            ns,
            name,
            {
                "observedGeneration": (route_obj.get("metadata") or {}).get("generation", 0),
                "url": f"http://{host}",
                "address": address,
                "traffic": traffic,
                "conditions": [condition("Ready", route_status, route_reason, route_message, None)],
            },
        )
        ready, ready_reason, ready_message = worst(
            (status, reason, message), (route_status, route_reason, route_message)
        )
        await self._patch_status(
            SERVICES,
            ns,
            name,
            {
                **common,
                "observedGeneration": (obj.get("metadata") or {}).get("generation", 0),
                "url": f"http://{host}",
                "address": address,
                "traffic": traffic,
                "conditions": [
                    condition("ConfigurationsReady", status, reason, message, previous),
                    condition("RoutesReady", route_status, route_reason, route_message, previous),
                    condition("Ready", ready, ready_reason, ready_message, previous),
                ],
            },
        )

    # -- revision garbage collection (config-gc) -----------------------------------------------------------
    def gc_policy(self) -> GcPolicy:
        c = self._config
        return GcPolicy(
            retain_since_create=c.gc_retain_since_create_time,
            retain_since_last_active=c.gc_retain_since_last_active_time,
            min_non_active=c.gc_min_non_active_revisions,
            max_non_active=c.gc_max_non_active_revisions,
        )

    async def _collect_garbage(self) -> None:
        """Label each revision `routingState: active|reserve` (stamping when that changed), then delete the
        non-active revisions the policy gives up."""
        now = time.time()
        policy = self.gc_policy()
        for state in self.reconciler.services:
            ns = state.service.namespace
            active = {t.revision for t in state.targets} | {state.configuration.latest, state.latest_ready}
            candidates: list[RevisionAge] = []
            for name in state.configuration.revisions:
                obj = self.revisions.get(ns, name)
                if obj is None:
                    continue
                meta = obj.get("metadata") or {}
                routing = "active" if name in active else "reserve"
                created = _timestamp(meta.get("creationTimestamp")) or now
                modified = _timestamp((meta.get("annotations") or {}).get(ROUTING_STATE_MODIFIED))
                if (meta.get("labels") or {}).get(ROUTING_STATE) != routing:
                    stamp = _now()
                    await self._kube.merge_patch(
                        REVISIONS,
                        ns,
                        name,
                        {
                            "metadata": {
                                "labels": {ROUTING_STATE: routing},
                                "annotations": {ROUTING_STATE_MODIFIED: stamp},
                            }
                        },
                    )
                    modified = _timestamp(stamp)
                if routing == "reserve":
                    candidates.append(RevisionAge(name, created, modified or created))
            for name in collectable(candidates, now, policy):
                try:
                    self.reconciler.collect(RevisionKey(ns, name))
                except ConfigurationError as exc:
                    log.warning("not collecting %s/%s: %s", ns, name, exc)
                    continue
                log.info("Revision %s/%s garbage-collected (no route references it)", ns, name)
        for key in self.runtime.to_remove:
            await self._kube.delete(REVISIONS, key.namespace, key.name)
            self._owners.pop((REVISIONS.plural, key.namespace, key.name), None)
            self._statuses.forget(REVISIONS, key.namespace, key.name)
        self.runtime.to_remove.clear()

    async def _write_revision_status(self, namespace: str, name: str, ready: bool) -> None:
        obj = self.revisions.get(namespace, name)
        if obj is None:
            return
        deployment = self.deployments.get(namespace, deployment_name(name)) or {}
        actual = int((deployment.get("status") or {}).get("readyReplicas") or 0)
        previous = (obj.get("status") or {}).get("conditions")
        status: JSON = {
            "observedGeneration": (obj.get("metadata") or {}).get("generation", 0),
            "actualReplicas": actual,
            "conditions": [
                condition(
                    "Ready", "True" if ready else "Unknown", "" if ready else "Deploying", "", previous
                ),
                condition(
                    "ContainerHealthy",
                    "True" if ready else "Unknown",
                    "" if ready else "Deploying",
                    "",
                    previous,
                ),
            ],
        }
        await self._patch_status(REVISIONS, namespace, name, status)


def _timestamp(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _template_of(obj: Mapping[str, Any]) -> RevisionTemplate | None:
    """The template a Revision object was stamped from, parsed back."""
    meta = obj.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != DIGEST}
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if not k.startswith("serving.knative.dev/")}
    doc = {
        "metadata": {"name": meta.get("name"), "annotations": annotations, "labels": labels},
        "spec": obj.get("spec") or {},
    }
    problems: list[str] = []
    return parse_template(FieldReader(f"Revision {meta.get('name')}", problems), doc, "spec.template", None)
