"""The GitHub webhook receiver's decisions, as pure functions: whether a delivery to a GitHubSource is
genuine and wanted, the HTTP status to answer it with, and the CloudEvent Knative's GitHub source
(knative-extensions/eventing-github) would make of it. The HTTP server around it reads the body and delivers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from eventing.event import SPECVERSION, Event
from eventing.ping import override_extensions, rfc3339
from serving.events import GitHubSource

SIGNATURE_HEADER: Final = "X-Hub-Signature-256"
LEGACY_SIGNATURE_HEADER: Final = "X-Hub-Signature"
EVENT_HEADER: Final = "X-GitHub-Event"
DELIVERY_HEADER: Final = "X-GitHub-Delivery"
EVENT_TYPE_PREFIX: Final = "dev.knative.source.github."
"""Knative's `GitHubEventTypePrefix` plus its dot: `dev.knative.source.github.push` (`source`, singular)."""
SOURCE_PREFIX: Final = "https://github.com/"
"""Knative's `GitHubEventSourcePrefix`: the `source` is this plus `spec.ownerAndRepository`, for GitHub
Enterprise too."""
MAX_BODY_BYTES: Final = 25 * 1024 * 1024
"""GitHub caps webhook payloads at 25 MB and sends nothing for a larger event; 25 MiB holds either reading
of that cap. The server should read no more than this (its request size limit)."""
_SIGNATURE_RE: Final = re.compile(r"sha256=([0-9a-fA-F]{64})")
_INT32: Final = range(-(2**31), 2**31)
"""CloudEvents integers are 32-bit; the SDK Knative uses drops an extension outside this range."""


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """What to answer GitHub, and the event to deliver if any.

    Rejections (4xx, 5xx) carry no event; GitHub shows `reason` in the hook's delivery log. A `ping` the
    source does not subscribe to is answered 200 with no event; a wanted event comes with status 202, which
    the server answers once the event is handed on (Knative's adapter answers 202 once the sink took it).
    """

    status: int
    reason: str
    event: Event | None = None

    @property
    def accepted(self) -> bool:
        return self.status < 400


def receive(
    source: GitHubSource,
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime | None = None,
) -> WebhookResult:
    """Check one webhook delivery and build its event.

    `secret` is the webhook secret (the value behind `spec.secretToken`), `headers` the request's headers in
    any case, `body` the raw body, `now` the time of receipt for the event's `time` (Knative stamps the
    moment it sends). The size is checked first (no hashing of a huge body), then the signature (so an
    unsigned caller learns nothing about the source's settings), then the headers and the payload.

    Knative's adapter answers 400 to every refusal (404 to an event type it does not know); the codes here
    tell GitHub's delivery log who is at fault: 401/403 the signature, 413 the size, 400 the request.
    """
    if len(body) > MAX_BODY_BYTES:
        return WebhookResult(413, f"the body is {len(body)} bytes; GitHub sends at most {MAX_BODY_BYTES}")
    if not secret:
        return WebhookResult(
            500, f"{source.where}: the webhook secret is empty, so no delivery can be verified"
        )
    lowered = {name.lower(): value for name, value in headers.items()}
    problem = signature_problem(secret, lowered.get(SIGNATURE_HEADER.lower()), body)
    if problem is not None:
        if SIGNATURE_HEADER.lower() not in lowered and LEGACY_SIGNATURE_HEADER.lower() in lowered:
            problem += f" (only the SHA-1 {LEGACY_SIGNATURE_HEADER} was sent, which is not accepted)"
        return WebhookResult(401 if SIGNATURE_HEADER.lower() not in lowered else 403, problem)
    event_type = lowered.get(EVENT_HEADER.lower(), "").strip()
    delivery = lowered.get(DELIVERY_HEADER.lower(), "").strip()
    if not event_type:
        return WebhookResult(400, f"the {EVENT_HEADER} header is missing")
    if not delivery:
        return WebhookResult(400, f"the {DELIVERY_HEADER} header is missing")
    if lowered.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return WebhookResult(
            400, "the webhook sends form-encoded payloads; set its content type to application/json"
        )
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return WebhookResult(400, "the body is not JSON")
    if not isinstance(payload, dict):
        return WebhookResult(400, "the body is not a JSON object")
    if event_type not in source.event_types:
        if event_type == "ping":
            return WebhookResult(200, "pong: the webhook reaches this source; ping is not in spec.eventTypes")
        wanted = ", ".join(source.event_types)
        return WebhookResult(400, f"event type {event_type!r} is not in spec.eventTypes ({wanted})")
    event = build_event(source, event_type, delivery, payload, body, now or datetime.now(UTC))
    return WebhookResult(202, "accepted", event)


def signature_problem(secret: bytes, header: str | None, body: bytes) -> str | None:
    """Why `header` (the `X-Hub-Signature-256` value) does not sign `body` with `secret`, or None.

    Only the SHA-256 signature counts. GitHub sends it with every delivery of a hook that has a secret,
    beside the legacy SHA-1 `X-Hub-Signature`; a request with the SHA-1 header alone did not come from such
    a hook, and taking it would let a forger pick the weaker hash. The comparison takes constant time.
    """
    if header is None:
        return f"the {SIGNATURE_HEADER} header is missing"
    match = _SIGNATURE_RE.fullmatch(header.strip())
    if match is None:
        return f"the {SIGNATURE_HEADER} header is not sha256= and 64 hex digits"
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, match.group(1).lower()):
        return f"the {SIGNATURE_HEADER} signature does not match the body and the webhook secret"
    return None


def sign(secret: bytes, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def build_event(
    source: GitHubSource,
    event_type: str,
    delivery: str,
    payload: Mapping[str, object],
    body: bytes,
    time: datetime,
) -> Event:
    """The CloudEvent Knative's GitHub adapter sends for one delivery, with the raw body as its data.

    Knative re-encodes the payload from its Go structs (dropping fields they lack); the raw body keeps every
    field GitHub sent. Its extensions and subject follow Knative's table below, except that a field the
    payload lacks is left out where Knative sends the Go zero value (`installation: 0`, `label: ""`).
    `spec.ceOverrides` are applied last, as every other Knative source applies them.
    """
    attributes = {
        "specversion": SPECVERSION,
        "id": delivery,
        "source": SOURCE_PREFIX + source.owner_and_repository,
        "type": EVENT_TYPE_PREFIX + event_type,
        "time": rfc3339(time),
        "datacontenttype": "application/json",
    }
    shape = _SHAPES.get(event_type)
    if shape is not None:
        subject = shape.subject(payload)
        if subject:
            attributes["subject"] = subject
        for name, path in shape.extensions:
            value = _extension_value(_lookup(payload, path))
            if value is not None:
                attributes[name] = value
    attributes.update(override_extensions(source.ce_overrides))
    return Event(attributes=attributes, data=body)


def _lookup(payload: Mapping[str, object], path: tuple[str, ...]) -> object:
    value: object = payload
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _extension_value(value: object) -> str | None:
    """A payload value as a binary-mode attribute: booleans as `true`/`false`, 32-bit integers in decimal,
    non-empty strings as they are; anything else is left out."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value in _INT32 else None
    if isinstance(value, str) and value:
        return value
    return None


def _text(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | str):
        return str(value).strip() or None
    return None


def _at(*path: str) -> Callable[[Mapping[str, object]], str | None]:
    return lambda payload: _text(_lookup(payload, path))


def _last_part(*path: str) -> Callable[[Mapping[str, object]], str | None]:
    """The part after the last `/` of a URL: `a10867b14bb7...000000000000` of a push's compare URL."""

    def subject(payload: Mapping[str, object]) -> str | None:
        url = _lookup(payload, path)
        if not isinstance(url, str) or "/" not in url:
            return None
        return url.rsplit("/", 1)[1].strip() or None

    return subject


def _page_names(payload: Mapping[str, object]) -> str | None:
    pages = payload.get("pages")
    if not isinstance(pages, list):
        return None
    names = [page.get("page_name") for page in pages if isinstance(page, dict)]
    return ",".join(name for name in names if isinstance(name, str)) or None


@dataclass(frozen=True, slots=True)
class _Shape:
    subject: Callable[[Mapping[str, object]], str | None]
    extensions: tuple[tuple[str, tuple[str, ...]], ...]


_OWNER: Final = ("owner", ("repository", "owner", "login"))
_REPOSITORY: Final = ("repository", ("repository", "name"))
_ORG_OWNER: Final = ("owner", ("organization", "login"))
_SENDER: Final = ("sender", ("sender", "login"))
_ACTION: Final = ("action", ("action",))
_INSTALLATION: Final = ("installation", ("installation", "id"))
_REF: Final = ("ref", ("ref",))
_REPO: Final = (_OWNER, _REPOSITORY, _SENDER)
_REPO_ACTION: Final = (*_REPO, _ACTION)
_APP_INSTALL: Final = (_INSTALLATION, _SENDER, _ACTION)
_ORG_ACTION: Final = (_ORG_OWNER, _SENDER, _ACTION)

# Knative's SubjectAndExtensionsFromGitHubEvent (eventing-github pkg/common/events.go), event by event.
_SHAPES: Final[dict[str, _Shape]] = {
    "check_run": _Shape(_at("check_run", "id"), _REPO_ACTION),
    "check_suite": _Shape(_at("check_suite", "id"), _REPO_ACTION),
    "commit_comment": _Shape(_last_part("comment", "html_url"), _REPO_ACTION),
    "create": _Shape(_at("ref_type"), (*_REPO, _REF)),
    "delete": _Shape(_at("ref_type"), (*_REPO, _REF)),
    "deployment": _Shape(_at("deployment", "id"), _REPO),
    "deployment_status": _Shape(_at("deployment", "id"), _REPO),
    "fork": _Shape(_at("forkee", "id"), _REPO),
    "gollum": _Shape(_page_names, _REPO),
    "installation": _Shape(_at("installation", "id"), _APP_INSTALL),
    "integration_installation": _Shape(_at("installation", "id"), _APP_INSTALL),
    "installation_repositories": _Shape(_at("installation", "id"), _APP_INSTALL),
    "integration_installation_repositories": _Shape(_at("installation", "id"), _APP_INSTALL),
    "issue_comment": _Shape(_last_part("comment", "html_url"), _REPO_ACTION),
    "issues": _Shape(
        _at("issue", "number"),
        (*_REPO_ACTION, ("label", ("label", "name")), ("assignee", ("assignee", "login"))),
    ),
    "label": _Shape(_at("label", "name"), (*_REPO_ACTION, ("label", ("label", "name")))),
    "member": _Shape(_at("member", "id"), _REPO_ACTION),
    "membership": _Shape(_at("member", "id"), (_ORG_OWNER, ("scope", ("scope",)), _SENDER, _ACTION)),
    "milestone": _Shape(_at("milestone", "number"), _REPO_ACTION),
    "organization": _Shape(_at("action"), _ORG_ACTION),
    "org_block": _Shape(_at("action"), _ORG_ACTION),
    "page_build": _Shape(_at("id"), _REPO),
    "ping": _Shape(_at("hook_id"), _REPO),
    "project_card": _Shape(_at("action"), _REPO_ACTION),
    "project_column": _Shape(_at("action"), _REPO_ACTION),
    "project": _Shape(_at("action"), _REPO_ACTION),
    "public": _Shape(_at("repository", "id"), _REPO),
    "pull_request": _Shape(
        _at("pull_request", "number"),
        (
            _OWNER,
            _REPOSITORY,
            _INSTALLATION,
            _SENDER,
            _ACTION,
            ("number", ("number",)),
            ("label", ("label", "name")),
            ("assignee", ("assignee", "login")),
        ),
    ),
    "pull_request_review_comment": _Shape(
        _at("comment", "id"), (_OWNER, _REPOSITORY, _INSTALLATION, _SENDER, _ACTION)
    ),
    "pull_request_review": _Shape(
        _at("review", "id"),
        (_OWNER, _REPOSITORY, _INSTALLATION, _SENDER, _ACTION, ("review", ("review", "state"))),
    ),
    "push": _Shape(
        _last_part("compare"),
        (
            _OWNER,
            _REPOSITORY,
            _INSTALLATION,
            _SENDER,
            ("pusher", ("pusher", "name")),
            _REF,
            ("created", ("created",)),
            ("deleted", ("deleted",)),
            ("forced", ("forced",)),
        ),
    ),
    "release": _Shape(
        _at("release", "tag_name"),
        (_OWNER, _REPOSITORY, _INSTALLATION, _SENDER, _ACTION, ("release", ("release", "name"))),
    ),
    "repository": _Shape(_at("repository", "id"), _REPO_ACTION),
    "repository_vulnerability_alert": _Shape(_at("alert", "id"), (_ACTION,)),
    "security_advisory": _Shape(_at("security_advisory", "ghsa_id"), (_ACTION,)),
    "status": _Shape(
        _at("sha"),
        (*_REPO, ("state", ("state",)), ("name", ("name",)), ("context", ("context",))),
    ),
    "team": _Shape(_at("team", "id"), (_SENDER, _ACTION)),
    "team_add": _Shape(_at("repository", "id"), _REPO),
    "watch": _Shape(_at("repository", "id"), _REPO_ACTION),
}
