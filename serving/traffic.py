"""The traffic block of a Service (`spec.traffic`): which revisions get which share, and under which tags.

Checked as Knative's webhook does (percentages 0-100 summing to 100, unique DNS-label tags, `latestRevision`
xor `revisionName`); resolving names to existing revisions is the Route's job (`serving.route`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from serving.validation import DNS_LABEL_MAX, FieldReader, dns1035_label_problem

_TRAFFIC_FIELDS: Final = frozenset({"tag", "revisionName", "latestRevision", "percent"})


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficTarget:
    """One `spec.traffic` entry. `latest_revision` None means: latest iff no `revision_name` (Knative)."""

    percent: int | None
    revision_name: str | None
    latest_revision: bool | None
    tag: str | None

    @property
    def tracks_latest(self) -> bool:
        return self.latest_revision if self.latest_revision is not None else self.revision_name is None


DEFAULT_TRAFFIC: Final = (TrafficTarget(percent=100, revision_name=None, latest_revision=True, tag=None),)


def parse_traffic(r: FieldReader, raw: object, service_name: str | None) -> tuple[TrafficTarget, ...]:
    """Read `spec.traffic`; absent or empty means 100 % to the latest revision (Knative's default)."""
    items = r.sequence(raw, "spec.traffic")
    if not items:
        return DEFAULT_TRAFFIC
    targets: list[TrafficTarget] = []
    tags: dict[str, int] = {}
    total = 0
    for i, item in enumerate(items):
        path = f"spec.traffic[{i}]"
        entry = r.mapping(item, path)
        if entry is None:
            continue
        r.fields(
            entry,
            path,
            _TRAFFIC_FIELDS,
            {
                "configurationName": "not allowed in a Service: its traffic targets its own Configuration",
                "url": "not allowed in spec: the URL is reported in status",
            },
        )
        percent = r.integer(entry, "percent", path, 0, 100)
        raw_percent = entry.get("percent")
        # Knative sums the values as written, out-of-range ones included.
        total += raw_percent if isinstance(raw_percent, int) and not isinstance(raw_percent, bool) else 0
        # An empty string is unset, as in Knative (Go's zero value): `revisionName: ""` tracks the latest.
        revision_name = r.string(entry, "revisionName", path) or None
        latest = r.boolean(entry, "latestRevision", path)
        tag = r.string(entry, "tag", path) or None
        if revision_name is not None:
            r.check(f"{path}.revisionName", revision_name, dns1035_label_problem)
        if latest is True and revision_name is not None:
            r.add(
                f"{path}.latestRevision",
                f"may not set revisionName {revision_name!r} when latestRevision is true: a target follows "
                "either the latest revision or the one it names",
            )
        elif latest is False and entry.get("revisionName") in (None, ""):  # a non-string one is reported
            r.add(f"{path}.revisionName", "required when latestRevision is false: name the revision to pin")
        if tag is not None:
            _check_tag(r, f"{path}.tag", tag, service_name)
            if tag in tags:
                r.add(f"{path}.tag", f"tag {tag!r} is already used by spec.traffic[{tags[tag]}]")
            else:
                tags[tag] = i
        targets.append(
            TrafficTarget(percent=percent, revision_name=revision_name, latest_revision=latest, tag=tag)
        )
    if total != 100:
        r.add("spec.traffic", f"traffic percentages sum to {total}, want 100")
    return tuple(targets)


def _check_tag(r: FieldReader, path: str, tag: str, service_name: str | None) -> None:
    problem = dns1035_label_problem(tag)
    if problem:
        r.add(path, problem)
        return
    if service_name is not None and len(tag) + 1 + len(service_name) > DNS_LABEL_MAX:
        r.add(path, f"host label {tag}-{service_name} is longer than {DNS_LABEL_MAX} characters")
