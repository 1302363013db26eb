"""Time-weighted request concurrency over reporting windows, as the queue-proxy and the activator report it.

Two requests that each last 500 ms inside a 1 s window average 1.0. Request counts count arrivals. Each figure
is kept twice: all requests, and those that came through the activator (proxied), because the autoscaler
records total minus proxied from pods and adds the activator's own report.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WindowReport:
    """Load over one closed window."""

    average_concurrency: float
    average_proxied_concurrency: float
    request_count: float
    proxied_request_count: float


class RequestStats:
    """Accumulates the area under the concurrency curve between reports.

    `request_in`/`request_out` are on the hot path: a few float operations each, no allocation.
    """

    __slots__ = (
        "_area",
        "_concurrency",
        "_count",
        "_last_change",
        "_proxied_area",
        "_proxied_concurrency",
        "_proxied_count",
        "_window_start",
    )

    def __init__(self, now: float) -> None:
        self._window_start = now
        self._last_change = now
        self._concurrency = 0
        self._proxied_concurrency = 0
        self._area = 0.0
        self._proxied_area = 0.0
        self._count = 0
        self._proxied_count = 0

    @property
    def concurrency(self) -> int:
        """Requests in flight right now."""
        return self._concurrency

    def _advance(self, now: float) -> None:
        elapsed = now - self._last_change
        if elapsed > 0:
            self._area += self._concurrency * elapsed
            self._proxied_area += self._proxied_concurrency * elapsed
            self._last_change = now

    def request_in(self, now: float, proxied: bool) -> None:
        self._advance(now)
        self._concurrency += 1
        self._count += 1
        if proxied:
            self._proxied_concurrency += 1
            self._proxied_count += 1

    def request_out(self, now: float, proxied: bool) -> None:
        self._advance(now)
        self._concurrency -= 1
        if proxied:
            self._proxied_concurrency -= 1

    def report(self, now: float) -> WindowReport:
        """Close the window ending at `now` and start a new one; in-flight requests carry over."""
        self._advance(now)
        length = now - self._window_start
        if length > 0:
            average = self._area / length
            proxied_average = self._proxied_area / length
        else:
            average = float(self._concurrency)
            proxied_average = float(self._proxied_concurrency)
        report = WindowReport(average, proxied_average, float(self._count), float(self._proxied_count))
        self._window_start = now
        self._last_change = now
        self._area = 0.0
        self._proxied_area = 0.0
        self._count = 0
        self._proxied_count = 0
        return report
