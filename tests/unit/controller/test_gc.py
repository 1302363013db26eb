"""Revision garbage collection: Knative's `config-gc` rules over non-active revisions."""

from __future__ import annotations

from controller.reconcile.gc import GcPolicy, RevisionAge, collectable

HOUR = 3600.0
NOW = 1_000_000.0


def ages(*inactive_hours: float, created_hours: float = 100.0) -> list[RevisionAge]:
    return [
        RevisionAge(f"r{i}", NOW - created_hours * HOUR, NOW - hours * HOUR)
        for i, hours in enumerate(inactive_hours)
    ]


def test_defaults_keep_twenty_whatever_their_age() -> None:
    assert collectable(ages(*[500.0] * 20), NOW, GcPolicy()) == []
    assert collectable(ages(*[500.0] * 21), NOW, GcPolicy()) == ["r20"]


def test_beyond_the_minimum_a_revision_goes_only_when_old_and_stale() -> None:
    policy = GcPolicy(retain_since_create=48 * HOUR, retain_since_last_active=15 * HOUR, min_non_active=1)
    revisions = [
        RevisionAge("newest", NOW - 100 * HOUR, NOW - 1 * HOUR),  # kept: the minimum
        RevisionAge("recently-active", NOW - 100 * HOUR, NOW - 10 * HOUR),  # inactive for 10 h only
        RevisionAge("young", NOW - 20 * HOUR, NOW - 19 * HOUR),  # created 20 h ago only
        RevisionAge("old-and-stale", NOW - 100 * HOUR, NOW - 50 * HOUR),
    ]
    assert collectable(revisions, NOW, policy) == ["old-and-stale"]


def test_the_maximum_removes_the_longest_inactive_whatever_their_age() -> None:
    policy = GcPolicy(
        min_non_active=0, max_non_active=2, retain_since_create=1e9, retain_since_last_active=1e9
    )
    assert collectable(ages(1.0, 3.0, 2.0, 4.0, created_hours=1.0), NOW, policy) == ["r1", "r3"]


def test_a_negative_maximum_is_no_bound() -> None:
    policy = GcPolicy(
        min_non_active=0, max_non_active=-1, retain_since_create=1e9, retain_since_last_active=1e9
    )
    assert collectable(ages(*[1.0] * 50), NOW, policy) == []


def test_zero_retention_and_minimum_collect_every_candidate() -> None:
    policy = GcPolicy(min_non_active=0, retain_since_create=0, retain_since_last_active=0)
    assert sorted(collectable(ages(1.0, 2.0), NOW, policy)) == ["r0", "r1"]
