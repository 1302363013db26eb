"""What a running `serving up` should run: the objects of its files plus those sent by `serving apply`.

The files are the source of truth for their objects (an edit replaces all of them at once); an applied object
lives until `serving delete` removes it or another apply replaces it. An object belongs to one side only:
applying one a file defines, or a file defining one that was applied, is an error naming the other place, so
that nothing is silently overridden.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Final

from serving.configdata import ConfigData
from serving.events import EventObject
from serving.service import KIND, Manifests, Service, duplicate_problems

ObjectKey = tuple[str, str, str]
"""(kind, namespace, name): `Service`, `ConfigMap`, `Secret` or an Eventing kind (`Broker`, `Trigger`...)."""
KIND_NAMES: Final = {
    "service": KIND,
    "configmap": "ConfigMap",
    "secret": "Secret",
    "broker": "Broker",
    "trigger": "Trigger",
    "pingsource": "PingSource",
    "sinkbinding": "SinkBinding",
    "containersource": "ContainerSource",
    "githubsource": "GitHubSource",
}
"""What `serving delete KIND NAME` accepts (also plural, any case), and the kind it means."""

Object = Service | ConfigData | EventObject


def kind_named(text: str) -> str | None:
    """`services`, `Service`, `ksvc`, `cm`... as a kind, or None."""
    lowered = text.lower()
    aliases = {"ksvc": "service", "cm": "configmap"}
    lowered = aliases.get(lowered, lowered)
    return KIND_NAMES.get(lowered) or KIND_NAMES.get(lowered.removesuffix("s"))


def key_of(obj: Object) -> ObjectKey:
    if isinstance(obj, Service):
        return (KIND, obj.namespace, obj.name)
    return (obj.kind, obj.namespace, obj.name)


def objects(manifests: Manifests) -> list[Object]:
    """Every object of `manifests`: its Services, then its ConfigMaps and Secrets, then Eventing objects."""
    return [*manifests.services, *manifests.configs, *manifests.events]


@dataclass(frozen=True, slots=True)
class Desired:
    files: Manifests = field(default_factory=lambda: Manifests([], []))
    applied: tuple[Object, ...] = ()
    """Applied objects, in the order they were first applied."""

    def merged(self) -> Manifests:
        """Every object to run: the files' then the applied ones."""
        services = [*self.files.services, *(o for o in self.applied if isinstance(o, Service))]
        configs = [*self.files.configs, *(o for o in self.applied if isinstance(o, ConfigData))]
        events = [*self.files.events, *(o for o in self.applied if isinstance(o, EventObject))]
        return Manifests(services, configs, events)

    def problems(self) -> list[str]:
        """Objects defined both in a file and by `serving apply` (or twice by either)."""
        return duplicate_problems(self.merged())

    def with_files(self, files: Manifests) -> Desired:
        return replace(self, files=files)

    def with_applied(self, incoming: Manifests) -> Desired:
        """Applied objects replaced by `incoming` (same kind, namespace and name), new ones added."""
        by_key = {key_of(o): o for o in objects(incoming)}
        kept = [by_key.pop(key_of(o), o) for o in self.applied]
        return replace(self, applied=(*kept, *by_key.values()))

    def without(self, key: ObjectKey) -> Desired | None:
        """Without the applied object `key`; None when no applied object has that key."""
        kept = tuple(o for o in self.applied if key_of(o) != key)
        return None if len(kept) == len(self.applied) else replace(self, applied=kept)

    def file_defining(self, key: ObjectKey) -> Object | None:
        return next((o for o in objects(self.files) if key_of(o) == key), None)

    def find(self, key: ObjectKey) -> Object | None:
        return next((o for o in objects(self.merged()) if key_of(o) == key), None)
