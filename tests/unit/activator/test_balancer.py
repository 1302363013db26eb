from __future__ import annotations

import random

import pytest

from activator.balancer import (
    PodTracker,
    RandomChoiceOfTwo,
    RoundRobin,
    first_available,
    policy_for,
)


def trackers(count: int, capacity: int) -> list[PodTracker]:
    return [PodTracker(f"10.0.0.{i}:8012", capacity) for i in range(count)]


def test_tracker_reserves_up_to_capacity_and_unlimited_never_refuses() -> None:
    limited = PodTracker("a:1", 2)
    assert [limited.reserve() for _ in range(3)] == [True, True, False]
    limited.release()
    assert limited.reserve()
    unlimited = PodTracker("b:1", 0)
    assert all(unlimited.reserve() for _ in range(1000))
    assert unlimited.in_flight == 1000


@pytest.mark.parametrize(
    ("cc", "kind"),
    [
        pytest.param(0, RandomChoiceOfTwo, id="cc0-random-choice-of-two"),
        pytest.param(1, type(first_available), id="cc1-first-available"),
        pytest.param(3, type(first_available), id="cc3-first-available"),
        pytest.param(4, RoundRobin, id="cc4-round-robin"),
        pytest.param(100, RoundRobin, id="cc100-round-robin"),
    ],
)
def test_policy_chosen_by_container_concurrency(cc: int, kind: type) -> None:
    policy = policy_for(cc, random.Random(1))
    assert isinstance(policy, kind)
    if cc in (1, 3):
        assert policy is first_available


def test_first_available_fills_pods_in_order() -> None:
    pods = trackers(3, 2)
    picks = [first_available(pods) for _ in range(6)]
    assert [p.address if p else None for p in picks] == [pods[i].address for i in (0, 0, 1, 1, 2, 2)]
    assert first_available(pods) is None
    pods[1].release()
    chosen = first_available(pods)
    assert chosen is pods[1]


def test_round_robin_rotates_and_skips_full_pods() -> None:
    pods = trackers(3, 5)
    policy = RoundRobin()
    assert [policy(pods) for _ in range(4)] == [pods[0], pods[1], pods[2], pods[0]]
    pods[1].in_flight = 5  # full
    assert [policy(pods) for _ in range(3)] == [pods[2], pods[0], pods[2]]


def test_round_robin_returns_none_when_all_full_and_copes_with_fewer_pods() -> None:
    pods = trackers(3, 1)
    policy = RoundRobin()
    assert [policy(pods) for _ in range(3)] == pods
    assert policy(pods) is None
    fewer = trackers(1, 4)
    assert policy(fewer) is fewer[0]


def test_random_choice_of_two_prefers_the_less_loaded_pod() -> None:
    pods = trackers(2, 0)
    pods[0].in_flight = 10
    policy = RandomChoiceOfTwo(random.Random(7))
    picks = [policy(pods) for _ in range(10)]
    # With two pods both are always compared: the idle one wins until loads are equal.
    assert picks == [pods[1]] * 10
    assert pods[1].in_flight == 10


def test_random_choice_of_two_spreads_load_evenly_over_many_pods() -> None:
    pods = trackers(10, 0)
    policy = RandomChoiceOfTwo(random.Random(42))
    for _ in range(1000):
        policy(pods)
    loads = [p.in_flight for p in pods]
    assert sum(loads) == 1000
    assert max(loads) - min(loads) <= 10  # pure random choice would spread far wider


def test_random_choice_of_two_with_one_or_no_pod() -> None:
    policy = RandomChoiceOfTwo(random.Random(3))
    assert policy([]) is None
    single = trackers(1, 0)
    assert policy(single) is single[0]
