"""Configuration -> Revisions, and the Route that splits a Service's traffic among them.

A Configuration stamps a new immutable revision each time the Service's template changes (Knative's
`<service>-00001`, `-00002`, ... or a name the user chose); the Route resolves `spec.traffic` against the
revisions that exist: `latestRevision` targets follow the newest one, named targets stay pinned.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.service import Service
from serving.template import RevisionTemplate


class ConfigurationError(ValueError):
    """A template cannot become a revision (a name reused for a different template)."""


class RouteError(ValueError):
    """`spec.traffic` names missing revisions, or there is no revision yet; `problems` lists each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def revision_name(service_name: str, generation: int) -> str:
    """Knative's generated revision name: the Configuration name and a 5-digit generation."""
    return f"{service_name}-{generation:05d}"


class Configuration:
    """The revision history of one Service.

    Invariants: revision names are unique; a name always maps to the same template (revisions are immutable);
    `generation` counts template changes, as Knative's Configuration generation, so generated names never
    go back even when a template returns to an earlier form.
    """

    def __init__(self, service_name: str) -> None:
        self.service_name = service_name
        self.generation = 0
        self._revisions: dict[str, RevisionTemplate] = {}
        self._digests: dict[str, str] = {}
        self._latest: str | None = None

    @property
    def latest(self) -> str | None:
        """The most recently applied revision (Knative's latestCreatedRevisionName)."""
        return self._latest

    @property
    def revisions(self) -> dict[str, RevisionTemplate]:
        """Every revision, oldest first."""
        return dict(self._revisions)

    def restore(self, name: str, template: RevisionTemplate, digest: str, generation: int) -> None:
        """Record a revision that exists already (read back from a cluster after a restart), stamped at
        `generation` from a template whose digest was `digest`; the newest generation becomes the latest."""
        self._revisions[name] = template
        self._digests[name] = digest
        if generation >= self.generation:
            self.generation = generation
            self._latest = name
        self._revisions = dict(sorted(self._revisions.items(), key=lambda item: item[0]))

    def forget(self, name: str) -> None:
        """Drop a revision that was garbage-collected; the latest one is never dropped."""
        if name == self._latest:
            raise ConfigurationError(f"revision {name!r} is the latest one and cannot be removed")
        self._revisions.pop(name, None)
        self._digests.pop(name, None)

    def apply(self, template: RevisionTemplate) -> tuple[str, bool]:
        """Make `template` the latest revision: (its name, whether a new revision was created).

        An unchanged template (same digest as the latest) creates nothing. A user-chosen name that exists
        already is reused only for the identical template; otherwise `ConfigurationError`.
        """
        digest = template.digest()
        if self._latest is not None and self._digests[self._latest] == digest:
            return self._latest, False
        if template.name is not None and template.name in self._revisions:
            if self._digests[template.name] != digest:
                raise ConfigurationError(
                    f"revision {template.name!r} already exists with a different template: revisions are "
                    "immutable, so give spec.template.metadata.name a new value (or remove it)"
                )
            self.generation += 1  # the template changed (back to an earlier one): a new generation
            self._latest = template.name
            return template.name, False
        name = template.name or revision_name(self.service_name, self.generation + 1)
        if name in self._revisions:
            raise ConfigurationError(
                f"revision {name!r} already exists (named in spec.template.metadata.name earlier) with a "
                "different template: choose another revision name"
            )
        self.generation += 1
        self._revisions[name] = template
        self._digests[name] = digest
        self._latest = name
        return name, True


@dataclass(frozen=True, slots=True)
class RouteTarget:
    revision: str
    percent: int
    tag: str | None
    """A tagged target is also reachable at `{tag}-{service}.{namespace}` whatever its percent (even 0)."""


def resolve_route(
    service: Service, configuration: Configuration, latest_ready: str | None = None
) -> list[RouteTarget]:
    """Resolve `spec.traffic` to revisions, one target per entry, in order (percent None -> 0).

    `latestRevision` targets go to `latest_ready` when given (Knative routes to the latest *ready*
    revision, so traffic stays on the old one while a new one starts), else to the latest revision.
    Raises `RouteError` naming the traffic entry when a revision does not exist.
    """
    latest = latest_ready if latest_ready is not None else configuration.latest
    known = configuration.revisions
    targets: list[RouteTarget] = []
    problems: list[str] = []
    for i, target in enumerate(service.traffic):
        if target.tracks_latest:
            if latest is None:
                problems.append(
                    f"spec.traffic[{i}]: latestRevision: Service {service.name} has no revision yet"
                )
                continue
            name = latest
        else:
            name = target.revision_name or ""
            if name not in known:
                have = ", ".join(known) or "none"
                problems.append(
                    f"spec.traffic[{i}].revisionName: revision {name!r} does not exist in Service "
                    f"{service.namespace}/{service.name} (revisions: {have})"
                )
                continue
        targets.append(RouteTarget(revision=name, percent=target.percent or 0, tag=target.tag))
    if problems:
        raise RouteError([f"{service.where}: {problem}" for problem in problems])
    return targets
