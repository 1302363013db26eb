"""The GitHub webhook receiver: which deliveries become events (with Knative's attributes), and how each
bad one is answered."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from eventing.github import MAX_BODY_BYTES, receive, sign
from serving.events import Destination, GitHubSource, SecretKeyRef

SECRET = b"It's a Secret to Everybody"
NOW = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"

PUSH = b"""{
  "ref": "refs/heads/main",
  "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
  "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
  "created": false,
  "deleted": false,
  "forced": true,
  "compare": "https://github.com/octo-org/hello-world/compare/6113728f27ae...0d1a26e67d8f",
  "head_commit": {"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "message": "Update README.md"},
  "repository": {
    "id": 1296269,
    "name": "hello-world",
    "full_name": "octo-org/hello-world",
    "html_url": "https://github.com/octo-org/hello-world",
    "owner": {"login": "octo-org"}
  },
  "pusher": {"name": "octocat", "email": "octocat@github.com"},
  "sender": {"login": "octocat", "id": 583231}
}"""


def github_source(event_types: tuple[str, ...] = ("push", "pull_request"), **overrides: str) -> GitHubSource:
    return GitHubSource(
        kind="GitHubSource",
        name="hello",
        namespace="demo",
        source=Path("github.yaml"),
        owner_and_repository="octo-org/hello-world",
        event_types=event_types,
        secret_token=SecretKeyRef(name="github-secret", key="secretToken"),
        sink=Destination(uri="http://display.demo.svc"),
        ce_overrides=overrides,
    )


def headers(
    event: str = "push",
    body: bytes = PUSH,
    *,
    signature: str | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    """What GitHub sends with a delivery of a hook that has a secret."""
    return {
        "Content-Type": content_type,
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": DELIVERY,
        "X-Hub-Signature": "sha1=0000000000000000000000000000000000000000",
        "X-Hub-Signature-256": signature or sign(SECRET, body),
    }


def test_a_signed_push_becomes_knatives_github_event() -> None:
    result = receive(github_source(), SECRET, headers(), PUSH, now=NOW)
    assert (result.status, result.accepted) == (202, True)
    assert result.event is not None
    assert result.event.attributes == {
        "specversion": "1.0",
        "id": DELIVERY,
        "source": "https://github.com/octo-org/hello-world",
        "type": "dev.knative.source.github.push",
        "time": "2024-05-01T12:00:00.250000Z",
        "datacontenttype": "application/json",
        "subject": "6113728f27ae...0d1a26e67d8f",
        "owner": "octo-org",
        "repository": "hello-world",
        "sender": "octocat",
        "pusher": "octocat",
        "ref": "refs/heads/main",
        "created": "false",
        "deleted": "false",
        "forced": "true",
    }
    assert result.event.data == PUSH  # byte for byte, as GitHub sent it


def test_header_names_are_matched_in_any_case() -> None:
    lowered = {name.lower(): value for name, value in headers().items()}
    result = receive(github_source(), SECRET, lowered, PUSH, now=NOW)
    assert result.status == 202


def test_a_pull_request_carries_its_number_installation_label_and_assignee() -> None:
    body = json.dumps(
        {
            "action": "labeled",
            "number": 1347,
            "pull_request": {"number": 1347, "title": "Amazing new feature"},
            "label": {"name": "bug"},
            "assignee": {"login": "hubot"},
            "installation": {"id": 2311213},
            "repository": {"name": "hello-world", "owner": {"login": "octo-org"}},
            "sender": {"login": "octocat"},
        }
    ).encode()
    result = receive(github_source(), SECRET, headers("pull_request", body), body, now=NOW)
    assert result.event is not None
    attributes = result.event.attributes
    assert attributes["type"] == "dev.knative.source.github.pull_request"
    assert {
        name: attributes[name] for name in ("subject", "number", "installation", "label", "assignee")
    } == {
        "subject": "1347",
        "number": "1347",
        "installation": "2311213",
        "label": "bug",
        "assignee": "hubot",
    }
    assert attributes["action"] == "labeled"


def test_a_value_beyond_a_cloudevents_integer_is_left_out() -> None:
    body = json.dumps({"action": "opened", "number": 7, "installation": {"id": 2**31}}).encode()
    result = receive(github_source(), SECRET, headers("pull_request", body), body, now=NOW)
    assert result.event is not None
    assert "installation" not in result.event.attributes
    assert "owner" not in result.event.attributes  # absent from the payload, so absent from the event
    assert result.event.attributes["number"] == "7"


def test_ce_overrides_add_extensions_but_cannot_replace_core_attributes() -> None:
    source = github_source(team="platform", type="forged", source="forged")
    result = receive(source, SECRET, headers(), PUSH, now=NOW)
    assert result.event is not None
    assert result.event.attributes["team"] == "platform"
    assert result.event.type == "dev.knative.source.github.push"
    assert result.event.source == "https://github.com/octo-org/hello-world"


PING = json.dumps(
    {
        "zen": "Design for failure.",
        "hook_id": 30,
        "repository": {"name": "hello-world", "owner": {"login": "o"}},
    }
).encode()


def test_githubs_ping_is_answered_without_an_event() -> None:
    result = receive(github_source(), SECRET, headers("ping", PING), PING, now=NOW)
    assert (result.status, result.event) == (200, None)
    assert "pong" in result.reason


def test_a_source_subscribed_to_ping_gets_it_as_an_event() -> None:
    result = receive(github_source(("ping",)), SECRET, headers("ping", PING), PING, now=NOW)
    assert result.status == 202
    assert result.event is not None
    assert result.event.type == "dev.knative.source.github.ping"
    assert result.event.attributes["subject"] == "30"


def without(name: str) -> dict[str, str]:
    return {key: value for key, value in headers().items() if key != name}


@pytest.mark.parametrize(
    ("secret", "request_headers", "body", "status", "reason"),
    [
        pytest.param(
            SECRET,
            without("X-Hub-Signature-256"),
            PUSH,
            401,
            "header is missing (only the SHA-1 X-Hub-Signature was sent, which is not accepted)",
            id="sha1-only",
        ),
        pytest.param(
            SECRET,
            {k: v for k, v in without("X-Hub-Signature-256").items() if k != "X-Hub-Signature"},
            PUSH,
            401,
            "the X-Hub-Signature-256 header is missing",
            id="unsigned",
        ),
        pytest.param(
            b"another secret",
            headers(),
            PUSH,
            403,
            "signature does not match the body and the webhook secret",
            id="other-secret",
        ),
        pytest.param(
            SECRET,
            headers(),
            PUSH.replace(b'"forced": true', b'"forced": false'),
            403,
            "signature does not match",
            id="tampered-body",
        ),
        pytest.param(
            SECRET,
            headers(signature="sha1=" + "0" * 40),
            PUSH,
            403,
            "is not sha256= and 64 hex digits",
            id="malformed-signature",
        ),
        pytest.param(b"", headers(), PUSH, 500, "the webhook secret is empty", id="no-secret"),
        pytest.param(
            SECRET, without("X-GitHub-Event"), PUSH, 400, "X-GitHub-Event header is missing", id="no-event"
        ),
        pytest.param(
            SECRET,
            without("X-GitHub-Delivery"),
            PUSH,
            400,
            "X-GitHub-Delivery header is missing",
            id="no-delivery",
        ),
        pytest.param(
            SECRET,
            headers("issues"),
            PUSH,
            400,
            "event type 'issues' is not in spec.eventTypes (push, pull_request)",
            id="unsubscribed",
        ),
        pytest.param(
            SECRET, headers(body=b"{not json"), b"{not json", 400, "the body is not JSON", id="bad-json"
        ),
        pytest.param(
            SECRET, headers(body=b"[1, 2]"), b"[1, 2]", 400, "the body is not a JSON object", id="json-array"
        ),
        pytest.param(
            SECRET,
            headers(body=b"[" * 100_000),
            b"[" * 100_000,
            400,
            "the body is not JSON",
            id="deep-nesting",
        ),
        pytest.param(SECRET, headers(body=b""), b"", 400, "the body is not JSON", id="empty-body"),
        pytest.param(
            SECRET,
            headers(body=b"payload=%7B%7D", content_type="application/x-www-form-urlencoded"),
            b"payload=%7B%7D",
            400,
            "set its content type to application/json",
            id="form-encoded",
        ),
    ],
)
def test_bad_deliveries_are_refused_with_their_status_and_reason(
    secret: bytes, request_headers: dict[str, str], body: bytes, status: int, reason: str
) -> None:
    result = receive(github_source(), secret, request_headers, body, now=NOW)
    assert (result.status, result.accepted, result.event) == (status, False, None)
    assert reason in result.reason


def test_an_oversized_body_is_refused_before_its_signature_is_computed() -> None:
    body = b" " * (MAX_BODY_BYTES + 1)
    result = receive(github_source(), SECRET, headers(body=b"not this body"), body, now=NOW)
    assert (result.status, result.event) == (413, None)
    assert f"GitHub sends at most {MAX_BODY_BYTES}" in result.reason


def test_the_largest_payload_github_sends_is_accepted() -> None:
    body = b'{"ref": "refs/heads/main", "padding": "' + b"x" * (MAX_BODY_BYTES - 50) + b'"}'
    assert len(body) <= MAX_BODY_BYTES
    result = receive(github_source(), SECRET, headers(body=body), body, now=NOW)
    assert result.status == 202
