from __future__ import annotations

import pytest

from activator.subset import assign_slice

PODS = [f"10.0.0.{i}:8012" for i in range(10)]


@pytest.mark.parametrize(
    ("total", "count", "index", "expected"),
    [
        pytest.param(5, 1, 0, [0, 1, 2, 3, 4], id="one-activator-takes-all"),
        pytest.param(1, 3, 2, [0], id="one-pod-is-shared"),
        pytest.param(4, 2, 0, [0, 1], id="even-split-first"),
        pytest.param(4, 2, 1, [2, 3], id="even-split-second"),
        pytest.param(5, 2, 0, [0, 1, 4], id="remnant-goes-to-index-0"),
        pytest.param(5, 2, 1, [2, 3], id="no-remnant-for-index-1"),
        pytest.param(8, 3, 0, [0, 1, 6], id="two-remnants-first"),
        pytest.param(8, 3, 1, [2, 3, 7], id="two-remnants-second"),
        pytest.param(8, 3, 2, [4, 5], id="two-remnants-third-gets-none"),
        pytest.param(3, 5, 3, [0], id="more-activators-than-pods-wraps"),
        pytest.param(3, 5, 4, [1], id="more-activators-than-pods-wraps-again"),
        pytest.param(0, 2, 1, [], id="no-pods"),
    ],
)
def test_assign_slice(total: int, count: int, index: int, expected: list[int]) -> None:
    assert assign_slice(PODS[:total], index, count) == [PODS[i] for i in expected]


@pytest.mark.parametrize(("total", "count"), [(7, 3), (10, 4), (9, 3), (6, 6)])
def test_every_pod_goes_to_exactly_one_activator_when_there_are_enough_pods(total: int, count: int) -> None:
    pods = PODS[:total]
    slices = [assign_slice(pods, i, count) for i in range(count)]
    flat = [p for s in slices for p in s]
    assert sorted(flat) == sorted(pods)
    assert len(flat) == len(set(flat))
    sizes = [len(s) for s in slices]
    assert max(sizes) - min(sizes) <= 1
