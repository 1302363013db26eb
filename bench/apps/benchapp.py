"""The benchmark app: answers every request after a configurable delay, with a configurable body size; run
as `python -m bench.apps.benchapp` (settings in `main`)."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import uvloop
from aiohttp import web

_MAX_BYTES = 8 * 1024 * 1024
"""Largest response body a request may ask for (keeps a typo from exhausting memory)."""


def _number(text: str | None, default: float) -> float:
    if text is None:
        return default
    try:
        return max(float(text), 0.0)
    except ValueError:
        return default


def make_app(default_sleep_ms: float, revision: str) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        received = len(await request.read())
        sleep_ms = _number(request.query.get("sleep"), default_sleep_ms)
        size = int(min(_number(request.query.get("bytes"), 2), _MAX_BYTES))
        if sleep_ms > 0:
            await asyncio.sleep(sleep_ms / 1000)
        return web.Response(
            body=b"ok"[:size] if size <= 2 else b"x" * size,
            headers={"X-Bench-Revision": revision, "X-Bench-Received": str(received)},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main() -> int:
    """Environment: `PORT` (given by the platform, default 8080), `SLEEP_MS` (default delay per request, 0),
    `STARTUP_MS` (delay before it listens: a slow-starting app), `K_REVISION` or `VERSION` (echoed in the
    `X-Bench-Revision` response header so a benchmark can tell which revision answered). Per request, the
    query parameters `sleep` (ms) and `bytes` (response body size) override the defaults; a request body is
    read and its size echoed in `X-Bench-Received`."""
    port = int(os.environ.get("PORT", "8080"))
    startup_ms = _number(os.environ.get("STARTUP_MS"), 0)
    if startup_ms > 0:
        time.sleep(startup_ms / 1000)
    revision = os.environ.get("K_REVISION") or os.environ.get("VERSION") or "unknown"
    app = make_app(_number(os.environ.get("SLEEP_MS"), 0), revision)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        print=None,
        access_log=None,
        shutdown_timeout=5,
        loop=uvloop.new_event_loop(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
