"""An informer: a local cache of one resource kept current by list + watch.

It lists (remembering the list's resourceVersion), then watches from there with bookmarks; a watch the server
ends is resumed from the last resourceVersion seen, a `410 Gone` (the version was compacted away) relists, and
an unreachable server is retried with capped exponential backoff, so the cache survives API server restarts.
Each change (and each relist) notifies the subscribers; `synced` is set after the first list.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Final

from serving.kube.api import JSON, ApiError, Kube, Resource, key_of

log = logging.getLogger(__name__)

BACKOFF_FIRST: Final = 0.2
BACKOFF_MAX: Final = 10.0


class Informer:
    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        watch_seconds: int = 290,
    ) -> None:
        self._kube = kube
        self.resource = resource
        self._namespace = namespace
        self._selector = label_selector
        self._watch_seconds = watch_seconds
        self.cache: dict[tuple[str, str], JSON] = {}
        self.synced = asyncio.Event()
        self._version = ""
        self._subscribers: list[asyncio.Queue[None]] = []
        self._listeners: list[Callable[[str, JSON], None]] = []
        self.relists = 0
        """Lists made (the first one included), for tests and logs."""

    def get(self, namespace: str, name: str) -> JSON | None:
        return self.cache.get((namespace, name))

    def items(self) -> list[JSON]:
        return [self.cache[k] for k in sorted(self.cache)]

    def on_event(self, listener: Callable[[str, JSON], None]) -> None:
        """Call `listener(type, object)` for every ADDED/MODIFIED/DELETED the cache applies."""
        self._listeners.append(listener)

    async def changes(self) -> AsyncIterator[None]:
        """Yields once synced, then after each batch of changes (never missing the last); until cancelled."""
        queue: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
        self._subscribers.append(queue)
        try:
            await self.synced.wait()
            yield None
            while True:
                await queue.get()
                yield None
        finally:
            self._subscribers.remove(queue)

    def _notify(self) -> None:
        for queue in self._subscribers:
            if queue.empty():
                queue.put_nowait(None)

    async def _list(self) -> None:
        data = await self._kube.list(self.resource, self._namespace, label_selector=self._selector)
        fresh = {key_of(obj): obj for obj in data.get("items", [])}
        for key, obj in fresh.items():
            obj.setdefault("apiVersion", self.resource.api_version)
            obj.setdefault("kind", self.resource.kind)
            old = self.cache.get(key)
            if old is None or old.get("metadata", {}).get("resourceVersion") != obj["metadata"].get(
                "resourceVersion"
            ):
                self._emit("ADDED" if old is None else "MODIFIED", obj)
        for key in [k for k in self.cache if k not in fresh]:
            self._emit("DELETED", self.cache[key])
        self.cache = fresh
        self._version = str(data.get("metadata", {}).get("resourceVersion", ""))
        self.relists += 1
        self.synced.set()
        self._notify()

    def _emit(self, kind: str, obj: JSON) -> None:
        for listener in self._listeners:
            try:
                listener(kind, obj)
            except Exception:
                log.exception("informer listener of %s failed", self.resource.plural)

    def _apply(self, kind: str, obj: JSON) -> None:
        version = obj.get("metadata", {}).get("resourceVersion")
        if version:
            self._version = str(version)
        if kind == "BOOKMARK":
            return
        key = key_of(obj)
        if kind == "DELETED":
            self.cache.pop(key, None)
        else:
            self.cache[key] = obj
        self._emit(kind, obj)
        self._notify()

    async def run(self) -> None:
        """List, then watch forever; runs until cancelled."""
        delay = BACKOFF_FIRST
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                async for kind, obj in self._kube.watch(
                    self.resource,
                    self._namespace,
                    self._version,
                    label_selector=self._selector,
                    seconds=self._watch_seconds,
                ):
                    obj.setdefault("apiVersion", self.resource.api_version)
                    obj.setdefault("kind", self.resource.kind)
                    self._apply(kind, obj)
                    delay = BACKOFF_FIRST
                continue  # the server ended the watch: resume from the last version
            except ApiError as exc:
                if exc.gone:
                    log.info("watch of %s expired (410 Gone): relisting", self.resource.plural)
                    need_list = True
                    continue
                log.warning("watch of %s failed: %s; retrying in %.1fs", self.resource.plural, exc, delay)
                if exc.status != 0:
                    need_list = True
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, BACKOFF_MAX)
