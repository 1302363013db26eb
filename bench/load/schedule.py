"""What the load generator sends and when: request targets (loopback only, encoded once) and open-loop
schedules of shots, each a target at an offset in seconds from the run's start.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

LOOPBACK: Final = frozenset({"127.0.0.1"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One kind of request: where it goes and what it says. `name` groups samples in the summary."""

    name: str
    port: int
    host: str = "127.0.0.1"
    host_header: str = "127.0.0.1"
    path: str = "/"
    method: str = "GET"
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    wire: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.host not in LOOPBACK:
            raise ValueError(f"target {self.name!r}: traffic goes to 127.0.0.1 only, not {self.host!r}")
        lines = [
            f"{self.method} {self.path} HTTP/1.1",
            f"Host: {self.host_header}",
            "User-Agent: serving-bench",
        ]
        lines += [f"{name}: {value}" for name, value in self.headers]
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(self.body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        object.__setattr__(self, "wire", head + self.body)


@dataclass(frozen=True, slots=True)
class Shot:
    """One request to send `at` seconds after the start of the run."""

    at: float
    target: Target


def constant_rate(targets: list[Target], rate: float, duration: float, start: float = 0.0) -> Iterator[Shot]:
    """`rate` requests per second for `duration` seconds, cycling through `targets` in order."""
    if rate <= 0 or duration <= 0:
        return
    count = round(rate * duration)
    for i in range(count):
        yield Shot(start + i / rate, targets[i % len(targets)])
