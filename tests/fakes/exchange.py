"""A scripted stand-in for the engine's `Exchange`, for handler tests that need failures on cue.

It implements the part of `serving.http.Exchange` the router's and the activator's handlers use; each
`forward` raises the next scripted error, and succeeds (200) once none is left.
"""

from __future__ import annotations

from collections.abc import Iterable

from serving.http import ForwardTimeouts, Headers, Request, UpstreamPool


class FakeExchange:
    note: object = None
    """`Exchange.note`: nothing decided by a fast path (these exchanges go to the handler directly)."""

    def __init__(self, host: str, *errors: BaseException, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.request = Request(
            "GET", "/", "1.1", Headers([("host", host), *headers]), ("127.0.0.1", 5000), True, False
        )
        self.response_started = False
        self.responses: list[tuple[int, bytes]] = []
        self.response_headers: list[tuple[str, str]] = []
        self.forwarded_to: list[str] = []
        self.forwarded_headers: list[Headers] = []
        self.retry_refused: list[bool] = []
        self._errors = list(errors)

    async def respond(self, status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> None:
        if self.response_started:
            raise RuntimeError("a response was already sent on this exchange")
        self.responses.append((status, body))
        self.response_headers = list(headers)
        self.response_started = True

    async def forward(
        self,
        pool: UpstreamPool,
        headers: Headers,
        *,
        timeouts: ForwardTimeouts | None = None,
        response_headers: Iterable[tuple[str, str]] = (),
        retry_refused: bool = False,
    ) -> int:
        self.forwarded_to.append(pool.address)
        self.forwarded_headers.append(headers.copy())
        self.retry_refused.append(retry_refused)
        if self._errors:
            raise self._errors.pop(0)
        self.response_started = True
        return 200
