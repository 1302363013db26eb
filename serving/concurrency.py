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

    The area is kept as a running sum: a request adds `-now` when it starts and `+now` when it ends, so a
    request that ends inside the window adds its duration, and at a report the requests still in flight add
    `now` each; they carry into the next window as if they had started at its beginning. So
    `request_in`/`request_out`, on the hot path, are one subtraction or addition and a counter each: no branch
    on elapsed time, no allocation.
    """

    __slots__ = (
        "_area",
        "_concurrency",
        "_count",
        "_proxied_area",
        "_proxied_concurrency",
        "_proxied_count",
        "_window_start",
    )

    def __init__(self, now: float) -> None:
        self._window_start = now
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

    def request_in(self, now: float, proxied: bool) -> None:
        self._area -= now
        self._concurrency += 1
        self._count += 1
        if proxied:
            self._proxied_area -= now
            self._proxied_concurrency += 1
            self._proxied_count += 1

    def request_out(self, now: float, proxied: bool) -> None:
        self._area += now
        self._concurrency -= 1
        if proxied:
            self._proxied_area += now
            self._proxied_concurrency -= 1

    def report(self, now: float) -> WindowReport:
        """Close the window ending at `now` and start a new one; in-flight requests carry over."""
        concurrency, proxied = self._concurrency, self._proxied_concurrency
        length = now - self._window_start
        if length > 0:
            average = (self._area + concurrency * now) / length
            proxied_average = (self._proxied_area + proxied * now) / length
        else:
            average = float(concurrency)
            proxied_average = float(proxied)
        report = WindowReport(average, proxied_average, float(self._count), float(self._proxied_count))
        self._window_start = now
        self._area = -concurrency * now
        self._proxied_area = -proxied * now
        self._count = 0
        self._proxied_count = 0
        return report
