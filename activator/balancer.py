"""Load balancing across a revision's pods, chosen by containerConcurrency exactly as Knative does.

CC = 0 (unlimited): power of two random choices, the one with fewer requests in flight wins.
CC 1-3: the first pod (in address order) with a free slot, which keeps small pods full and packs work.
CC > 3: round-robin over the pods that have a free slot.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

UNLIMITED = 0
"""A tracker capacity of 0 means no per-pod limit (containerConcurrency 0)."""

FIRST_AVAILABLE_MAX_CC = 3
"""Largest containerConcurrency balanced by first-available (Knative's threshold)."""


class PodTracker:
    """This activator's requests in flight to one pod, and how many it may send there.

    `capacity` is containerConcurrency (0 = unlimited). `reserve` never waits: the revision throttler has
    already admitted the request, so some assigned pod has a free slot.
    """

    __slots__ = ("address", "capacity", "in_flight")

    def __init__(self, address: str, capacity: int) -> None:
        self.address = address
        self.capacity = capacity
        self.in_flight = 0

    def reserve(self) -> bool:
        if self.capacity != UNLIMITED and self.in_flight >= self.capacity:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight -= 1

    def __repr__(self) -> str:
        return f"PodTracker({self.address!r}, {self.in_flight}/{self.capacity or 'unlimited'})"


class Policy(Protocol):
    """Picks a pod and reserves a slot on it, or returns None when no pod has one."""

    def __call__(self, trackers: Sequence[PodTracker]) -> PodTracker | None: ...


class RandomChoiceOfTwo:
    """Two distinct pods drawn at random; the one with fewer in flight wins, ties broken at random."""

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def __call__(self, trackers: Sequence[PodTracker]) -> PodTracker | None:
        count = len(trackers)
        if count == 0:
            return None
        if count == 1:
            pick = trackers[0]
        else:
            first, second = 0, 1
            if count > 2:
                first = self._rng.randrange(count)
                second = self._rng.randrange(count - 1)
                if second >= first:
                    second += 1
            pick, other = trackers[first], trackers[second]
            if other.in_flight < pick.in_flight or (
                other.in_flight == pick.in_flight and self._rng.random() < 0.5
            ):
                pick = other
        return pick if pick.reserve() else None


def first_available(trackers: Sequence[PodTracker]) -> PodTracker | None:
    """The first pod, in the given (address) order, with a free slot."""
    for tracker in trackers:
        if tracker.reserve():
            return tracker
    return None


class RoundRobin:
    """Each pick starts after the previous one and takes the next pod with a free slot."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def __call__(self, trackers: Sequence[PodTracker]) -> PodTracker | None:
        count = len(trackers)
        if self._next >= count:
            self._next = 0
        for offset in range(count):
            position = (self._next + offset) % count
            tracker = trackers[position]
            if tracker.reserve():
                self._next = position + 1
                return tracker
        return None


def policy_for(container_concurrency: int, rng: random.Random) -> Policy:
    if container_concurrency == 0:
        return RandomChoiceOfTwo(rng)
    if container_concurrency <= FIRST_AVAILABLE_MAX_CC:
        return first_available
    return RoundRobin()
