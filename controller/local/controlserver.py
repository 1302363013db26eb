"""The control API of a running `serving up` on loopback: what `serving status`, `apply`, `delete`, `list` and
`describe` talk to (its address is in the state file).

`GET /status` is the status document; `POST /v1/apply` takes `{"documents": [{"source", "text"}]}` (the
files' text as `serving apply` read them) and answers `{"changes": [...]}`, or 422 with `{"problems": [...]}`
when anything is invalid, in which case nothing changed; `DELETE /v1/{kind}/{namespace}/{name}` and
`GET /v1/{kind}/{namespace}/{name}` (describe) answer 404 for an unknown object and 409 for a delete of an
object that a `serving up` file defines.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any, Final, Protocol

from aiohttp import web

from controller.local.desired import ObjectKey, kind_named
from controller.reconcile.reconciler import ApplyError
from serving.service import ServiceFileError

log = logging.getLogger(__name__)

JSON = dict[str, Any]
MAX_APPLY_BYTES: Final = 16 << 20
"""Largest `serving apply` body: 16 files at the 1 MiB limit of a Service file, encoded as JSON."""


class NotFound(LookupError):
    """No such object; the message names it."""


class Conflict(Exception):
    """The object cannot be changed this way; the message says why and what to do instead."""


class Control(Protocol):
    """What the control API asks of `serving up` (the local system)."""

    def status(self) -> JSON: ...

    async def apply(self, texts: list[tuple[Path, str]]) -> list[str]:
        """Apply the objects of these texts; raises `ServiceFileError` or `ApplyError` changing nothing."""
        ...

    async def delete(self, key: ObjectKey) -> list[str]:
        """Delete an applied object; raises `NotFound` or `Conflict`."""
        ...

    def describe(self, key: ObjectKey) -> JSON:
        """One object in detail; raises `NotFound`."""
        ...


def _problems(status: int, problems: list[str]) -> web.Response:
    return web.json_response({"problems": problems}, status=status)


def _key(request: web.Request) -> ObjectKey:
    kind = kind_named(request.match_info["kind"])
    if kind is None:
        raise web.HTTPNotFound(text=f"unknown kind {request.match_info['kind']!r}\n")
    return (kind, request.match_info["namespace"], request.match_info["name"])


TOKEN_HEADER: Final = "Serving-Control-Token"


def _guard(token: str) -> Any:
    """Every route but `GET /status` needs the state file's token (a local user or a web page that can reach
    the port cannot change anything), and a body must be JSON (no form posts from a browser)."""

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path != "/status":
            if not secrets.compare_digest(request.headers.get(TOKEN_HEADER, ""), token):
                return _problems(403, [f"missing or wrong {TOKEN_HEADER}: it is in the state file, up.json"])
            if request.method == "POST" and request.content_type != "application/json":
                return _problems(415, ["the body must be application/json"])
        response: web.StreamResponse = await handler(request)
        return response

    return guard


def control_app(control: Control, token: str) -> web.Application:
    async def status(_: web.Request) -> web.Response:
        return web.json_response(control.status())

    async def apply(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            texts = [(Path(str(d["source"])), str(d["text"])) for d in body["documents"]]
        except (ValueError, KeyError, TypeError) as exc:
            return _problems(400, [f"bad apply request: {exc!r}"])
        try:
            return web.json_response({"changes": await control.apply(texts)})
        except (ServiceFileError, ApplyError) as exc:
            return _problems(422, exc.problems)

    async def delete(request: web.Request) -> web.Response:
        try:
            return web.json_response({"changes": await control.delete(_key(request))})
        except NotFound as exc:
            return _problems(404, [str(exc)])
        except Conflict as exc:
            return _problems(409, [str(exc)])

    async def describe(request: web.Request) -> web.Response:
        try:
            return web.json_response(control.describe(_key(request)))
        except NotFound as exc:
            return _problems(404, [str(exc)])

    app = web.Application(client_max_size=MAX_APPLY_BYTES, middlewares=[_guard(token)])
    app.router.add_get("/status", status)
    app.router.add_post("/v1/apply", apply)
    app.router.add_delete("/v1/{kind}/{namespace}/{name}", delete)
    app.router.add_get("/v1/{kind}/{namespace}/{name}", describe)
    return app
