from __future__ import annotations

import random
import socket

import pytest

from controller.local.runtime.port import NoFreePort, PortAllocator, is_free


def test_ports_are_distinct_free_and_in_range() -> None:
    allocator = PortAllocator(low=21000, high=21050, rng=random.Random(7))
    ports = allocator.allocate_many(20)
    assert len(set(ports)) == 20
    assert all(21000 <= p < 21050 for p in ports)
    assert allocator.reserved == frozenset(ports)


def test_busy_port_is_skipped() -> None:
    # Two adjacent free ports below the ephemeral range; the first is then held by a listening socket.
    port = next(p for p in range(21200, 21400, 2) if is_free(p) and is_free(p + 1))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        assert not is_free(port)
        allocator = PortAllocator(low=port, high=port + 2, rng=random.Random(1))
        assert allocator.allocate() == port + 1
        with pytest.raises(NoFreePort):
            allocator.allocate()


def test_exhausted_range_raises_and_release_makes_room() -> None:
    allocator = PortAllocator(low=21100, high=21103, rng=random.Random(3))
    ports = allocator.allocate_many(3)
    with pytest.raises(NoFreePort):
        allocator.allocate()
    allocator.release(ports[1])
    assert allocator.allocate() == ports[1]


def test_bad_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="bad port range"):
        PortAllocator(low=500, high=500)
