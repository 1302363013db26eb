"""The test Kafka's cluster ids: the storage tool's argument parser reads an id starting with `-` as an
option, so no id may start with one (a format failed one time in 64 before)."""

from __future__ import annotations

import base64

from tests.kafka.broker import _cluster_id


def test_cluster_ids_are_kafka_uuids_that_never_start_with_a_dash() -> None:
    ids = {_cluster_id() for _ in range(5000)}
    assert len(ids) == 5000
    for cluster_id in ids:
        assert not cluster_id.startswith("-"), cluster_id
        assert len(cluster_id) == 22
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
