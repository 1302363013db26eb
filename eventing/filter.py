"""Which events a Trigger receives: `spec.filter.attributes` (exact match) and the `spec.filters` dialect
(`exact`, `prefix`, `suffix`, `all`, `any`, `not`), evaluated over an event's attributes."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from serving.events import Filter

Match = Callable[[Mapping[str, str]], bool]


def _everything(attributes: Mapping[str, str]) -> bool:
    return True


def compile_filters(attributes: Mapping[str, str], filters: tuple[Filter, ...]) -> Match:
    """One predicate for a Trigger: `filters` when it has any (Knative then ignores `filter`), else the
    attribute filter, where an empty value matches any value of a present-or-absent attribute (Knative's
    `Any`)."""
    if filters:
        return _all(tuple(_compile(f) for f in filters))
    wanted = {name: value for name, value in attributes.items() if value != ""}
    if not wanted:
        return _everything
    items = tuple(wanted.items())

    def exact(attrs: Mapping[str, str]) -> bool:
        return all(attrs.get(name) == value for name, value in items)

    return exact


def _all(parts: tuple[Match, ...]) -> Match:
    return lambda attrs: all(part(attrs) for part in parts)


def _compile(f: Filter) -> Match:
    items = tuple(f.attributes.items())
    if f.dialect == "exact":
        return lambda attrs: all(attrs.get(n) == v for n, v in items)
    if f.dialect == "prefix":
        return lambda attrs: all(n in attrs and attrs[n].startswith(v) for n, v in items)
    if f.dialect == "suffix":
        return lambda attrs: all(n in attrs and attrs[n].endswith(v) for n, v in items)
    children = tuple(_compile(c) for c in f.children)
    if f.dialect == "all":
        return _all(children)
    if f.dialect == "any":
        return lambda attrs: any(child(attrs) for child in children)
    if f.dialect == "not":
        (child,) = children
        return lambda attrs: not child(attrs)
    raise ValueError(f"unknown filter dialect {f.dialect!r}")
