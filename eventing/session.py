"""The HTTP session for what the lean delivery client does not speak (`https://` subscribers, the platform's
watch): keep-alive, `*.localhost` on loopback, no cookies. Apart from `eventing.delivery` because that module
is compiled, and a compiled class cannot subclass aiohttp's resolver (setup.py)."""

from __future__ import annotations

import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult


class LocalResolver(AbstractResolver):
    """`localhost` and `*.localhost` are 127.0.0.1 (as curl and browsers treat them), so that Service
    addresses `http://name.namespace.localhost:8080` work with no DNS set-up; other names resolve normally."""

    def __init__(self) -> None:
        self._default = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host == "localhost" or host.endswith(".localhost"):
            return [
                {
                    "hostname": host,
                    "host": "127.0.0.1",
                    "port": port,
                    "family": socket.AF_INET,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            ]
        return await self._default.resolve(host, port, family)

    async def close(self) -> None:
        await self._default.close()


def client_session(limit: int = 1000) -> aiohttp.ClientSession:
    """The session every delivery goes through: keep-alive, `*.localhost` on loopback, no cookies."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, resolver=LocalResolver())
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
    )
