"""The local platform's store: revisions, pods, statuses, and which revisions the routes still reach."""

from __future__ import annotations

from controller.local.store import Store
from serving.platform import Revision, RevisionKey

OLD = RevisionKey("default", "hello-00001")
NEW = RevisionKey("default", "hello-00002")


def revision(key: RevisionKey) -> Revision:
    return Revision(key=key, service="hello", configuration="hello")


def test_a_revision_the_routes_left_is_unreachable_and_a_new_one_is_not() -> None:
    store = Store()
    store.put_revision(revision(OLD))
    store.set_routed(frozenset({OLD}))
    store.put_revision(revision(NEW))  # created, not routed yet: still reachable (it must come up)
    assert [(r.key, r.reachable) for r in store.revisions()] == [(OLD, True), (NEW, True)]
    version = store.revisions_version
    store.set_routed(frozenset({NEW}))
    assert [(r.key, r.reachable) for r in store.revisions()] == [(OLD, False), (NEW, True)]
    assert store.revisions_version > version, "the platform API's watchers see the change"
    store.set_routed(frozenset({OLD, NEW}))  # routed again (a tag, a rollback)
    assert store.revision(OLD) == revision(OLD)


def test_routing_that_changes_nothing_is_no_new_version() -> None:
    store = Store()
    store.put_revision(revision(OLD))
    store.set_routed(frozenset({OLD}))
    version = store.version
    store.set_routed(frozenset({OLD}))
    assert store.version == version
