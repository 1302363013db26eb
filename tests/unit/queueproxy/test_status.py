from __future__ import annotations

import pytest

from queueproxy.status import RequestTimeout, response_for
from serving.breaker import QueueFull
from serving.http import IdleTimeout, ResponseStartTimeout, UpstreamConnectError, UpstreamError


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        pytest.param(QueueFull(), 503, b"pending request queue full\n", id="queue-full"),
        pytest.param(RequestTimeout(), 504, b"request timeout\n", id="total-timeout"),
        pytest.param(ResponseStartTimeout(), 504, None, id="response-start-timeout"),
        pytest.param(IdleTimeout(), 504, None, id="idle-timeout"),
        pytest.param(UpstreamConnectError("refused"), 502, b"connection refused by the app\n", id="refused"),
        pytest.param(UpstreamError("reset", response_started=False), 502, None, id="upstream-error"),
    ],
)
def test_status_mapping(error: Exception, status: int, body: bytes | None) -> None:
    response = response_for(error)
    assert response.status == status
    if body is not None:
        assert response.body == body


def test_queue_full_says_when_to_retry() -> None:
    assert ("retry-after", "1") in response_for(QueueFull()).headers


def test_unknown_errors_are_not_mapped() -> None:
    with pytest.raises(TypeError, match="no response"):
        response_for(KeyError("bug"))


def test_only_the_refused_connection_502_is_marked_retryable() -> None:
    """`k-app-refused: 1` tells the activator or router in front that nothing reached the app; a 502 after
    the request reached the app must never carry it (retrying that could run the request twice)."""
    assert ("k-app-refused", "1") in response_for(UpstreamConnectError("refused")).headers
    others = [
        QueueFull(),
        RequestTimeout(),
        ResponseStartTimeout(),
        IdleTimeout(),
        UpstreamError("reset", response_started=False),
    ]
    for error in others:
        assert all(name != "k-app-refused" for name, _ in response_for(error).headers), error
