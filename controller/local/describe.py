"""`serving describe` documents: one Service (spec, revisions, traffic, Knative's conditions, recent events)
or one ConfigMap or Secret (its keys and sizes, never a Secret's values).

Conditions follow Knative's Service status: `ConfigurationsReady` when the latest created revision is ready,
`RoutesReady` when every revision that gets traffic is ready, `Ready` when both are.
"""

from __future__ import annotations

from typing import Any

from serving.configdata import ConfigData
from serving.events import EventObject
from serving.service import Service

JSON = dict[str, Any]


def _condition(kind: str, ok: bool | None, reason: str | None = None) -> JSON:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    return {"type": kind, "status": status, "reason": reason}


def conditions(status: JSON | None) -> list[JSON]:
    """Knative's three Service conditions, from the Service's status document."""
    if status is None:
        return [
            _condition(kind, None, "NotReconciled")
            for kind in ("Ready", "ConfigurationsReady", "RoutesReady")
        ]
    revisions = {r["name"]: r for r in status["revisions"]}
    latest = revisions.get(status["latest_created_revision"])
    if latest is None or latest["ready"]:
        configurations: bool | None = latest is not None
        config_reason = None if configurations else "NoRevision"
    else:
        configurations = False if latest.get("reason") else None
        config_reason = latest.get("reason") or "RevisionStarting"
    routed = [r for r in revisions.values() if r["traffic_percent"] > 0]
    waiting = [r["name"] for r in routed if not r["ready"]]
    routes = not waiting and bool(routed)
    route_reason = (
        None if routes else (f"revision {', '.join(waiting)} not ready" if waiting else "NoTraffic")
    )
    ready = configurations is True and routes
    ready_reason = None if ready else (config_reason or route_reason)
    return [
        _condition("Ready", ready if ready or configurations is not None else None, ready_reason),
        _condition("ConfigurationsReady", configurations, config_reason),
        _condition("RoutesReady", routes, route_reason),
    ]


def describe_service(service: Service, origin: str, status: JSON | None, events: list[str]) -> JSON:
    return {
        "kind": "Service",
        "namespace": service.namespace,
        "name": service.name,
        "origin": origin,
        "source": str(service.source),
        "url": status["url"] if status else None,
        "template": dict(service.template.raw),
        "traffic": [
            {
                "percent": t.percent,
                "revisionName": t.revision_name,
                "latestRevision": t.tracks_latest,
                "tag": t.tag,
            }
            for t in service.traffic
        ],
        "conditions": conditions(status),
        "latest_created_revision": status["latest_created_revision"] if status else None,
        "latest_ready_revision": status["latest_ready_revision"] if status else None,
        "revisions": status["revisions"] if status else [],
        "events": events,
    }


def describe_config(config: ConfigData, origin: str, events: list[str]) -> JSON:
    """Keys and value sizes only: a ConfigMap's values are in its file, a Secret's are never shown."""
    return {
        "kind": config.kind,
        "namespace": config.namespace,
        "name": config.name,
        "origin": origin,
        "source": str(config.source),
        "type": config.secret_type if config.secret else None,
        "immutable": config.immutable,
        "keys": {key: len(value) for key, value in sorted(config.data.items())},
        "events": events,
    }


def describe_event(obj: EventObject, origin: str, status: JSON | None, events: list[str]) -> JSON:
    """An Eventing object: where it is defined, Knative's `Ready` condition (with why not), and what
    `serving status` shows of it (its address, subscriber or sink, and its delivery counts)."""
    reason = (status or {}).get("reason") or None
    return {
        "kind": obj.kind,
        "namespace": obj.namespace,
        "name": obj.name,
        "origin": origin,
        "source": str(obj.source),
        "conditions": [_condition("Ready", status is not None and not reason, reason)],
        "status": {k: v for k, v in (status or {}).items() if k not in ("namespace", "name", "reason")},
        "events": events,
    }
