"""A fake local platform: a real aiohttp server speaking the platform API of `serving.platform`.

Tests set revisions and pods on it and read back what the autoscaler asked for.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

from aiohttp import web

from serving.platform import (
    Revision,
    RevisionKey,
    ScalerStatus,
    Snapshot,
    snapshot_to_json,
    status_from_json,
)


class FakePlatform:
    def __init__(self) -> None:
        self.revisions: dict[RevisionKey, Revision] = {}
        self.version = 1
        self.scale_calls: list[tuple[RevisionKey, int, list[str]]] = []
        self.statuses: dict[RevisionKey, ScalerStatus] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def snapshot(self) -> Snapshot:
        return Snapshot(self.version, tuple(self.revisions[k] for k in sorted(self.revisions)))

    async def put(self, revision: Revision) -> None:
        self.revisions[revision.key] = revision
        await self._bump()

    async def remove(self, key: RevisionKey) -> None:
        self.revisions.pop(key, None)
        await self._bump()

    async def set_pods(self, key: RevisionKey, pods: tuple[object, ...]) -> None:
        self.revisions[key] = replace(self.revisions[key], pods=pods)  # type: ignore[arg-type]  # tests pass Pods
        await self._bump()

    async def _bump(self) -> None:
        async with self._changed:
            self.version += 1
            self._changed.notify_all()

    async def _list(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            return web.json_response(snapshot_to_json(self.snapshot()))
        resp = web.StreamResponse()
        resp.content_type = "application/x-ndjson"
        await resp.prepare(request)
        seen = -1
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda seen=seen: self.version != seen)  # type: ignore[misc]  # bound default
                seen = self.version
                line = json.dumps(snapshot_to_json(self.snapshot())) + "\n"
            await resp.write(line.encode())

    async def _scale(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = RevisionKey(request.match_info["ns"], request.match_info["name"])
        self.scale_calls.append((key, int(body["replicas"]), list(body["remove"])))
        return web.json_response({})

    async def _status(self, request: web.Request) -> web.Response:
        key = RevisionKey(request.match_info["ns"], request.match_info["name"])
        self.statuses[key] = status_from_json(await request.json())
        return web.json_response({})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/v1/revisions", self._list)
        app.router.add_post("/v1/revisions/{ns}/{name}/scale", self._scale)
        app.router.add_put("/v1/revisions/{ns}/{name}/status", self._status)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
