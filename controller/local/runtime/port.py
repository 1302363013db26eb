"""Free loopback ports for local pods and components.

Ports are picked at random below Linux's ephemeral range (32768+), where outgoing connections and servers
bound to port 0 live, so a port handed to a child process is unlikely to be taken before the child binds it.
Each pick is checked by binding it, and ports handed out stay reserved until released.
"""

from __future__ import annotations

import random
import socket
from typing import Final

LOW: Final = 20000
HIGH: Final = 32768
"""Exclusive upper bound: the default start of Linux's ephemeral port range."""


class NoFreePort(Exception):
    """No free port was found in the allocator's range."""


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `port` can be bound on `host` right now (no SO_REUSEADDR: TIME_WAIT counts as busy)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class PortAllocator:
    """Hands out distinct free ports from [low, high); not thread-safe (one event loop uses it)."""

    def __init__(
        self,
        *,
        low: int = LOW,
        high: int = HIGH,
        rng: random.Random | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if not 0 < low < high <= 65536:
            raise ValueError(f"bad port range [{low}, {high})")
        self._low = low
        self._high = high
        self._rng = rng or random.Random()
        self._host = host
        self._reserved: set[int] = set()

    @property
    def reserved(self) -> frozenset[int]:
        return frozenset(self._reserved)

    def allocate(self) -> int:
        size = self._high - self._low
        # Random probes find a free port fast while the range is mostly free; a full scan settles the rest.
        for _ in range(min(size, 64)):
            port = self._rng.randrange(self._low, self._high)
            if self._take(port):
                return port
        start = self._rng.randrange(self._low, self._high)
        for offset in range(size):
            port = self._low + (start - self._low + offset) % size
            if self._take(port):
                return port
        raise NoFreePort(f"no free port in [{self._low}, {self._high})")

    def allocate_many(self, count: int) -> list[int]:
        return [self.allocate() for _ in range(count)]

    def release(self, *ports: int) -> None:
        for port in ports:
            self._reserved.discard(port)

    def _take(self, port: int) -> bool:
        if port in self._reserved or not is_free(port, self._host):
            return False
        self._reserved.add(port)
        return True
