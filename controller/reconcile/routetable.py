"""An ingress's routing table: Host name -> weighted revisions.

A Service answers on `{service}.{namespace}.{domain}` with its traffic split, and each tagged traffic target
on `{tag}-{service}.{namespace}.{domain}` with that one revision (even at 0 %); the domain is the platform's
(`localhost` for `serving up`, so that `*.localhost` resolves to loopback with no DNS set-up). In a cluster
each host also has cluster-local aliases (`{service}.{namespace}.svc.{cluster domain}` and its shorter
forms). The table is rebuilt whole on every change and swapped in at once, so a request sees either the old
routes or the new ones.
"""

from __future__ import annotations

import bisect
import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from serving.platform import RevisionKey

log = logging.getLogger(__name__)

DOMAIN: Final = "localhost"
_HEADERS_REMEMBERED: Final = 1024
"""The default domain: `serving up`'s."""


class TargetLike(Protocol):
    """A resolved traffic target (`serving.route.RouteTarget` fits)."""

    @property
    def revision(self) -> str: ...
    @property
    def percent(self) -> int: ...
    @property
    def tag(self) -> str | None: ...


def service_host(service: str, namespace: str, domain: str = DOMAIN) -> str:
    return f"{service}.{namespace}.{domain}"


def tag_host(tag: str, service: str, namespace: str, domain: str = DOMAIN) -> str:
    return f"{tag}-{service}.{namespace}.{domain}"


def cluster_local_host(name: str, namespace: str, cluster_domain: str) -> str:
    """The in-cluster name of the core Service `name`: `{name}.{namespace}.svc.{cluster domain}`."""
    return f"{name}.{namespace}.svc.{cluster_domain}"


def cluster_local_hosts(name: str, namespace: str, cluster_domain: str) -> tuple[str, ...]:
    """The Host headers a client inside the cluster sends for the core Service `name`: its full name and the
    shorter forms a pod's DNS search path completes (`.svc`, and the namespace alone), as Knative's
    cluster-local ingresses answer them."""
    return (
        cluster_local_host(name, namespace, cluster_domain),
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}",
    )


def url(host: str, port: int) -> str:
    return f"http://{host}" if port == 80 else f"http://{host}:{port}"


def normalize_host(value: str) -> str:
    """The host name of a `Host` header: lower-case, without port or trailing dot."""
    host = value.strip().lower()
    if host.startswith("["):  # an IPv6 literal: "[::1]:8080"
        end = host.find("]")
        host = host[: end + 1] if end != -1 else host
    else:
        host = host.partition(":")[0]
    return host.rstrip(".")


@dataclass(frozen=True, slots=True)
class Split:
    revision: RevisionKey
    percent: int


@dataclass(frozen=True, slots=True)
class HostRoute:
    """Where one host name (and its `aliases`) sends its requests; `splits` hold only positive percentages."""

    namespace: str
    service: str
    host: str
    tag: str | None
    splits: tuple[Split, ...]
    aliases: tuple[str, ...] = ()
    """Other names that route the same way (the cluster-local ones); not listed among the known hosts."""
    _bounds: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bounds: list[int] = []
        total = 0
        for split in self.splits:
            total += split.percent
            bounds.append(total)
        object.__setattr__(self, "_bounds", tuple(bounds))

    def pick(self, rng: random.Random) -> RevisionKey | None:
        """A revision chosen with probability proportional to its percentage; None when nothing routes."""
        if not self.splits:
            return None
        if len(self.splits) == 1:
            return self.splits[0].revision
        point = rng.random() * self._bounds[-1]
        return self.splits[bisect.bisect_right(self._bounds, point)].revision


class RouteTable:
    """Immutable map of host name -> route; build a new one to change routes.

    Every alias is a key of the same map as the hosts, so a lookup stays one dict access; a host wins over an
    alias that names it too, and of two routes claiming one name the first keeps it."""

    def __init__(self, routes: Iterable[HostRoute] = ()) -> None:
        self._routes: dict[str, HostRoute] = {}
        listed = list(routes)
        for route in listed:
            if route.host in self._routes:
                log.warning("host %s is claimed twice; keeping the first route", route.host)
                continue
            self._routes[route.host] = route
        self._by_name = dict(self._routes)
        self._by_header: dict[str, HostRoute] = {}
        """Routes by the Host header as clients spell it (with a port, in capitals): most requests skip
        `normalize_host`. Only hosts that route are remembered, up to `_HEADERS_REMEMBERED` spellings."""
        for route in listed:
            if self._routes.get(route.host) is not route:
                continue
            for alias in route.aliases:
                claimed = self._by_name.setdefault(alias, route)
                if claimed is not route:
                    log.warning("host %s is claimed twice; keeping the first route", alias)

    @property
    def routes(self) -> Mapping[str, HostRoute]:
        """Each route by its own host (aliases left out)."""
        return self._routes

    def lookup(self, host_header: str | None) -> HostRoute | None:
        if not host_header:
            return None
        route = self._by_header.get(host_header)
        if route is None:
            route = self._by_name.get(normalize_host(host_header))
            if route is not None and len(self._by_header) < _HEADERS_REMEMBERED:
                self._by_header[host_header] = route
        return route

    def hosts(self) -> list[str]:
        return sorted(self._routes)

    def revisions(self) -> frozenset[RevisionKey]:
        """Every revision some host sends traffic to (by percent or by tag)."""
        return frozenset(split.revision for route in self._routes.values() for split in route.splits)


def service_routes(
    namespace: str,
    service: str,
    targets: Iterable[TargetLike],
    domain: str = DOMAIN,
    cluster_domain: str | None = None,
) -> list[HostRoute]:
    """The service's own host first, then one host per tag (percentages of one revision are summed); with a
    `cluster_domain`, each also answers its cluster-local names."""

    def aliases(name: str) -> tuple[str, ...]:
        return cluster_local_hosts(name, namespace, cluster_domain) if cluster_domain else ()

    percents: dict[str, int] = {}
    tags: dict[str, str] = {}
    for target in targets:
        percents[target.revision] = percents.get(target.revision, 0) + target.percent
        if target.tag:
            tags[target.tag] = target.revision
    main = HostRoute(
        namespace=namespace,
        service=service,
        host=service_host(service, namespace, domain),
        tag=None,
        splits=tuple(Split(RevisionKey(namespace, rev), pct) for rev, pct in percents.items() if pct > 0),
        aliases=aliases(service),
    )
    tagged = [
        HostRoute(
            namespace=namespace,
            service=service,
            host=tag_host(tag, service, namespace, domain),
            tag=tag,
            splits=(Split(RevisionKey(namespace, rev), 100),),
            aliases=aliases(f"{tag}-{service}"),
        )
        for tag, rev in tags.items()
    ]
    return [main, *tagged]
