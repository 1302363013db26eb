from __future__ import annotations

import pytest

from controller.local.runtime.expansion import expand, expand_env

ENV = {"PORT": "8080", "NAME": "hello", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("--port=$(PORT)", "--port=8080", id="defined"),
        pytest.param("$(NAME)-$(PORT)", "hello-8080", id="two-references"),
        pytest.param("x$(EMPTY)y", "xy", id="defined-empty"),
        pytest.param("$(MISSING)", "$(MISSING)", id="undefined-kept"),
        pytest.param("$$(PORT)", "$(PORT)", id="escaped-reference"),
        pytest.param("$$$(PORT)", "$8080", id="escaped-dollar-then-reference"),
        pytest.param("cost $$5", "cost $5", id="escaped-dollar"),
        pytest.param("$PORT", "$PORT", id="shell-style-untouched"),
        pytest.param("ends with $", "ends with $", id="trailing-dollar"),
        pytest.param("$(PORT", "$(PORT", id="unterminated"),
        pytest.param("$($(PORT))", "$($(PORT))", id="nested-name-is-undefined"),
        pytest.param("$()", "$()", id="empty-name"),
        pytest.param("", "", id="empty"),
    ],
)
def test_expand_follows_kubelet_rules(text: str, expected: str) -> None:
    assert expand(text, ENV) == expected


def test_env_values_see_only_earlier_variables() -> None:
    env = expand_env(
        [("A", "a"), ("B", "$(A)-$(C)"), ("C", "c"), ("A", "$(A)$(A)")],
        base={"PORT": "9000"},
    )
    assert env == {"PORT": "9000", "A": "aa", "B": "a-$(C)", "C": "c"}
