"""The local platform API (`serving.platform`'s wire format) served from the controller on loopback.

The autoscaler and the activator watch revisions and pods here and the autoscaler scales revisions and
publishes its status here, exactly as they do against `tests.fakes.platform.FakePlatform`; behind it are the
real store and supervisor.

A watch sends a snapshot line only when revisions or pods changed (an autoscaler status is not part of the
snapshot), and every watcher gets the same encoded line: when many pods start at once each change would
otherwise be encoded once per watcher, and the lines grow with every revision.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from aiohttp import web

from controller.local.store import Store
from controller.reconcile.eventing import EventingFeed, stream_feed
from serving.platform import RevisionKey, snapshot_to_json, status_from_json

log = logging.getLogger(__name__)


class Scaler(Protocol):
    """Applies a replica count to a revision (the supervisor)."""

    def scale(self, key: RevisionKey, replicas: int, remove: list[str]) -> bool:
        """Set the desired replicas, removing the named pods first; False if the revision is unknown."""
        ...


class PlatformServer:
    def __init__(
        self, store: Store, scaler: Scaler, eventing: EventingFeed | None = None, token: str = ""
    ) -> None:
        """`eventing`: the Eventing objects, watched with `token` (they hold webhook secrets)."""
        self._store = store
        self._scaler = scaler
        self._eventing = eventing
        self._token = token
        self.scale_calls = 0
        self._line: tuple[int, bytes] = (0, b"")
        """The last encoded snapshot line and the store's `revisions_version` it shows."""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/revisions", self._list)
        app.router.add_post("/v1/revisions/{ns}/{name}/scale", self._scale)
        app.router.add_put("/v1/revisions/{ns}/{name}/status", self._status)
        app.router.add_get("/v1/eventing", self._eventing_watch)
        return app

    async def _eventing_watch(self, request: web.Request) -> web.StreamResponse:
        return await stream_feed(request, self._eventing, self._token)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            return web.json_response(snapshot_to_json(self._store.snapshot()))
        resp = web.StreamResponse()
        resp.content_type = "application/x-ndjson"
        await resp.prepare(request)
        sent = 0
        try:
            async for _ in self._store.changes():
                version = self._store.revisions_version
                if version != sent:
                    sent = version
                    await resp.write(self._snapshot_line(version))
        except ConnectionResetError:  # the watcher went away (restart, shutdown): nothing to clean up
            log.debug("platform watch from %s ended", request.remote)
        return resp

    def _snapshot_line(self, version: int) -> bytes:
        if self._line[0] != version:
            self._line = (version, (json.dumps(snapshot_to_json(self._store.snapshot())) + "\n").encode())
        return self._line[1]

    async def _scale(self, request: web.Request) -> web.Response:
        key = RevisionKey(request.match_info["ns"], request.match_info["name"])
        try:
            body: Any = await request.json()
            replicas = int(body["replicas"])
            remove = [str(name) for name in body.get("remove", [])]
            if replicas < 0:
                raise ValueError("replicas must be 0 or more")
        except (ValueError, KeyError, TypeError) as exc:
            return web.Response(status=400, text=f"bad scale request: {exc}\n")
        if not self._scaler.scale(key, replicas, remove):
            return web.Response(status=404, text=f"revision {key} not found\n")
        self.scale_calls += 1
        return web.json_response({})

    async def _status(self, request: web.Request) -> web.Response:
        key = RevisionKey(request.match_info["ns"], request.match_info["name"])
        try:
            status = status_from_json(await request.json())
        except (ValueError, KeyError, TypeError) as exc:
            return web.Response(status=400, text=f"bad status: {exc}\n")
        if not self._store.set_status(key, status):
            return web.Response(status=404, text=f"revision {key} not found\n")
        return web.json_response({})
