"""Request heads and header multi-maps as handlers see them.

Header names are stored lower-case once, at parse time, so every lookup on the hot path is a plain string
comparison; values keep their bytes as latin-1 strings so they round-trip exactly to the wire.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from serving import header

_NAME_BREAKERS: Final = re.compile("[ \t\r\n:]")
"""What a header name may not hold: it would end the name early or split the head."""


class Headers:
    """Ordered multi-map of header (name, value) str pairs; lookups are case-insensitive.

    Names are stored lower-case. A handful of headers per request makes a list with linear scans faster than
    any dict-of-lists, and keeps the original order for forwarding.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        if items:
            for name, value in items:
                self.add(name, value)

    @staticmethod
    def _trusted(items: list[tuple[str, str]]) -> Headers:
        """Wrap pairs that the parser already validated and lower-cased, without copying them. (A static
        method: compiled, `Headers()` here is a direct call; a class method's `cls()` is a generic one.)"""
        headers = Headers()
        headers._items = items
        return headers

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self._items:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self._items if key == name]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        name = name.lower()
        return any(key == name for key, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and other._items == self._items

    __hash__ = None  # type: ignore[assignment]  # mutable, like list

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def add(self, name: str, value: str) -> None:
        _check(name, value)
        self._items.append((name.lower(), value))

    def set(self, name: str, value: str) -> None:
        _check(name, value)
        name = name.lower()
        self._items = [(key, old) for key, old in self._items if key != name]
        self._items.append((name, value))

    def remove(self, name: str) -> None:
        name = name.lower()
        self._items = [(key, value) for key, value in self._items if key != name]

    def copy(self) -> Headers:
        return Headers._trusted(list(self._items))

    def drop(self, names: frozenset[str], prefixes: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        """Remove every pair whose name (lower-case) is in `names` or starts with one of `prefixes`, in one
        pass; the removed pairs, in their order."""
        kept: list[tuple[str, str]] = []
        dropped: list[tuple[str, str]] = []
        for item in self._items:
            name = item[0]
            if name in names or (prefixes and name.startswith(prefixes)):
                dropped.append(item)
            else:
                kept.append(item)
        if dropped:
            self._items = kept
        return dropped


def _check(name: str, value: str) -> None:
    """Refuse names and values that would split or corrupt the head written to the wire."""
    if not name or _NAME_BREAKERS.search(name) is not None:
        raise ValueError(f"invalid header name {name!r}")
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"invalid value for header {name!r}")


def connection_tokens(values: Iterable[str]) -> set[str]:
    """The lower-case option names listed in `Connection` header values (each names a hop-by-hop header)."""
    tokens: set[str] = set()
    for value in values:
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return tokens


class Request:
    """The parsed request head; the body is streamed only by `Exchange.forward`.

    A plain class with its own `__init__` rather than a dataclass: one is made per request, and a generated
    `__init__` would stay interpreted code in the compiled build.
    """

    __slots__ = ("client", "headers", "keep_alive", "method", "target", "upgrade", "version")

    def __init__(
        self,
        method: str,
        target: str,
        version: str,
        headers: Headers,
        client: tuple[str, int],
        keep_alive: bool,
        upgrade: bool,
    ) -> None:
        self.method = method
        """The request method, e.g. "GET"."""
        self.target = target
        """The raw request-target, e.g. "/path?q=1"."""
        self.version = version
        """"1.1" or "1.0"."""
        self.headers = headers
        """End-to-end and hop-by-hop headers as received."""
        self.client = client
        """The peer address of the client connection."""
        self.keep_alive = keep_alive
        """Whether the client wants the connection kept open after this exchange."""
        self.upgrade = upgrade
        """`Connection: upgrade` and `Upgrade:` are both present (websockets and the like)."""

    def __repr__(self) -> str:
        return f"Request({self.method} {self.target} HTTP/{self.version}, {len(self.headers)} headers)"

    @property
    def host(self) -> str | None:
        return self.headers.get(header.HOST)
