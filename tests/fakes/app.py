"""A real user app for data-plane tests: an aiohttp server with an endpoint per behaviour a proxy carries.

Endpoints (all on `FakeApp.url`):
- `/echo` (any method): the request body back, with `x-echo-method`/`x-echo-target` headers.
- `/headers`: the request headers as a JSON object of lists (names lower-case).
- `/sleep?ms=N`: answers after N ms (counted in the concurrency figures).
- `/stall?ms=N`: sends the head and one chunk, then stays silent for N ms before finishing.
- `/stream?chunks=N&size=S&interval_ms=M`: N chunks of S bytes, M ms apart.
- `/sse?events=N&interval_ms=M`: server-sent events `data: i`.
- `/ws?close_code=C`: websocket echo; the text `close` makes the app close with code C (default 1000).
- `/status/{code}`: that status with a short body.
- `/big?bytes=N`: N bytes of a repeating pattern.
- `/state`: JSON with `requests`, `active`, `max_active` (concurrency the app saw).
- `/`: `hello world` (what the benchmark measures).

Run as a process (`python -m tests.fakes.app --port N`, 0 for any free port) for benchmarks; uvloop is used
there, and the first line on stdout is `listening on PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from aiohttp import WSMsgType, web

PATTERN: Final = bytes(range(256))
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def pattern(size: int) -> bytes:
    """The deterministic body `/big?bytes=size` returns."""
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


class FakeApp:
    """Counts requests and concurrency; `max_active` is the most requests it ever held at once."""

    def __init__(self) -> None:
        self.requests = 0
        self.active = 0
        self.max_active = 0
        self.headers_seen: list[dict[str, list[str]]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset_counts(self) -> None:
        self.requests = 0
        self.max_active = self.active

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/state":
            return await handler(request)
        self.requests += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            return await handler(request)
        finally:
            self.active -= 1

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._count])
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_get("/", self._hello)
        app.router.add_get("/headers", self._headers)
        app.router.add_get("/sleep", self._sleep)
        app.router.add_get("/stall", self._stall)
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/sse", self._sse)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/big", self._big)
        app.router.add_get("/state", self._state)
        return app

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> FakeApp:
        self._runner = web.AppRunner(self.application(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        # The runner's public view of the bound sockets; the site's server is an `asyncio.Server` only on the
        # default loop (uvloop has its own class), so it is not inspected directly.
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeApp:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @staticmethod
    def _int(request: web.Request, name: str, default: int) -> int:
        return int(request.query.get(name, default))

    async def _hello(self, _: web.Request) -> web.Response:
        return web.Response(text="hello world")

    @staticmethod
    async def _hello_only(_: web.Request) -> web.Response:
        return web.Response(text="hello world")

    async def _echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(
            body=body,
            headers={"x-echo-method": request.method, "x-echo-target": request.path_qs},
        )

    async def _headers(self, request: web.Request) -> web.Response:
        seen: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            seen.setdefault(name.lower(), []).append(value)
        self.headers_seen.append(seen)
        return web.json_response(seen)

    async def _sleep(self, request: web.Request) -> web.Response:
        ms = self._int(request, "ms", 100)
        await asyncio.sleep(ms / 1000)
        return web.Response(text=f"slept {ms} ms")

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"started\n")
        await asyncio.sleep(self._int(request, "ms", 1000) / 1000)
        await response.write(b"finished\n")
        await response.write_eof()
        return response

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        chunks = self._int(request, "chunks", 5)
        size = self._int(request, "size", 16)
        interval = self._int(request, "interval_ms", 50) / 1000
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for index in range(chunks):
            await response.write(bytes([0x61 + index % 26]) * size)
            if index < chunks - 1:
                await asyncio.sleep(interval)
        await response.write_eof()
        return response

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        events = self._int(request, "events", 3)
        interval = self._int(request, "interval_ms", 100) / 1000
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        await response.prepare(request)
        for index in range(events):
            await response.write(f"data: {index}\n\n".encode())
            if index < events - 1:
                await asyncio.sleep(interval)
        await response.write_eof()
        return response

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        close_code = self._int(request, "close_code", 1000)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                if message.data == "close":
                    await ws.close(code=close_code, message=b"closing as asked")
                    break
                await ws.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws

    async def _status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.Response(status=code, text=f"status {code}")

    async def _big(self, request: web.Request) -> web.StreamResponse:
        size = self._int(request, "bytes", 1 << 20)
        return web.Response(body=pattern(size))

    async def _state(self, _: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps(
                {"requests": self.requests, "active": self.active, "max_active": self.max_active}
            ),
            content_type="application/json",
        )


async def running_app() -> AsyncIterator[FakeApp]:
    """For fixtures: `app = FakeApp()` started on a free port, closed afterwards."""
    app = await FakeApp().start()
    try:
        yield app
    finally:
        await app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the fake app on 127.0.0.1 (benchmarks, manual tests).")
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--hello-only", action="store_true", help="only `/`, no counting (for benchmarks)")
    args = parser.parse_args()
    import uvloop  # only in this process entry point

    async def serve() -> None:
        if args.hello_only:
            application = web.Application()
            application.router.add_get("/", FakeApp._hello_only)
            runner = web.AppRunner(application, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", args.port).start()
            port = int(runner.addresses[0][1])
        else:
            app = await FakeApp().start(args.port)
            port = app.port
        print(f"listening on {port}", flush=True)  # the bound port, so `--port 0` can be used
        await asyncio.Event().wait()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
