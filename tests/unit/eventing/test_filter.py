"""Trigger filters: the attribute filter and the `filters` dialect."""

from __future__ import annotations

import pytest

from eventing.filter import compile_filters
from serving.events import Filter

EVENT = {
    "type": "dev.knative.sources.ping",
    "source": "/apis/v1/namespaces/default/pingsources/p",
    "ext": "x",
}


@pytest.mark.parametrize(
    ("attributes", "filters", "matches"),
    [
        pytest.param({}, (), True, id="no-filter"),
        pytest.param({"type": "dev.knative.sources.ping"}, (), True, id="exact-attribute"),
        pytest.param({"type": "other"}, (), False, id="exact-attribute-mismatch"),
        pytest.param({"type": ""}, (), True, id="empty-value-is-any"),
        pytest.param({"missing": "v"}, (), False, id="missing-attribute"),
        pytest.param(
            {"type": "other"}, (Filter("prefix", {"type": "dev.knative."}),), True, id="filters-win"
        ),
        pytest.param({}, (Filter("suffix", {"source": "/p"}),), True, id="suffix"),
        pytest.param({}, (Filter("prefix", {"nothere": ""}),), False, id="prefix-missing-attribute"),
        pytest.param(
            {},
            (Filter("any", children=(Filter("exact", {"type": "a"}), Filter("exact", {"ext": "x"}))),),
            True,
            id="any",
        ),
        pytest.param(
            {},
            (Filter("all", children=(Filter("exact", {"type": "a"}), Filter("exact", {"ext": "x"}))),),
            False,
            id="all",
        ),
        pytest.param({}, (Filter("not", children=(Filter("exact", {"ext": "x"}),)),), False, id="not"),
        pytest.param({}, (Filter("exact", {"ext": "x"}), Filter("prefix", {"type": "dev"})), True, id="and"),
    ],
)
def test_filter(attributes: dict[str, str], filters: tuple[Filter, ...], matches: bool) -> None:
    assert compile_filters(attributes, filters)(EVENT) is matches
