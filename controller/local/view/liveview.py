"""Human views of the status document: the table `serving status` prints and `serving up` keeps on screen.

On a terminal `serving up` redraws the table in place every second, with the latest events below it; when
stdout is not a terminal (a log file, CI) it prints one line per event and one per revision whose summary
changed, so the output stays readable as a log.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final, TextIO

JSON = dict[str, Any]

_COLUMNS = ("REVISION", "TRAFFIC", "READY/PODS/WANT", "MODE", "REQ/S", "QUEUED", "STABLE", "PANIC")
_HOME = "\x1b[H"
_CLEAR_LINE = "\x1b[K"
_CLEAR_BELOW = "\x1b[J"
_CLEAR_SCREEN = "\x1b[2J"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def revision_cells(rev: JSON) -> list[str]:
    tags = f" ({', '.join(rev['tags'])})" if rev["tags"] else ""
    return [
        rev["name"] + tags,
        f"{rev['traffic_percent']}%",
        f"{rev['ready_pods']}/{rev['actual_pods']}/{rev['desired_pods']}",
        rev["mode"] + (" panic" if rev["panic"] else ""),
        f"{rev['requests_per_second']:.1f}",
        "-" if rev["queued"] is None else str(rev["queued"]),
        _number(rev["stable_concurrency"]),
        _number(rev["panic_concurrency"]),
    ]


def render(report: JSON) -> list[str]:
    """The status as text lines: one block per Service, one row per revision."""
    lines: list[str] = []
    for service in report["services"]:
        lines.append(f"{service['namespace']}/{service['name']}  {service['url']}")
        rows = [list(_COLUMNS)] + [revision_cells(r) for r in service["revisions"]]
        widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
        for row in rows:
            lines.append(
                "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            )
        for rev in service["revisions"]:
            lines.extend(_reason_lines(rev))
        lines.append("")
    if not report["services"]:
        lines.append("no Services")
    lines.extend(eventing_lines(report.get("eventing")))
    for name, component in sorted(report.get("components", {}).items()):
        if component.get("restarts"):
            lines.append(
                f"! {name}: restarted {component['restarts']} time(s), last {component['last_exit']}; "
                f"see {component['log']}"
            )
    return lines


_TRIGGER_COLUMNS = (
    "TRIGGER",
    "BROKER",
    "SUBSCRIBER",
    "DELIVERED",
    "RETRIED",
    "DEAD-LETTERED",
    "DROPPED",
    "IN-FLIGHT",
)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _count(value: object) -> str:
    """A count, or `-` while the eventing component has not reported it (not started, not yet scraped)."""
    return "-" if value is None else str(value)


def eventing_lines(eventing: JSON | None) -> list[str]:
    """Brokers (address, events accepted), Triggers (delivery counts) and sources, with why any is not
    ready; nothing when there are no Eventing objects."""
    if not eventing or not (eventing["brokers"] or eventing["triggers"] or eventing["sources"]):
        return []
    lines = [""]
    if eventing["brokers"]:
        rows = [["BROKER", "CLASS", "URL", "ACCEPTED"]] + [
            [f"{b['namespace']}/{b['name']}", b["class"], b["url"], _count(b.get("accepted"))]
            for b in eventing["brokers"]
        ]
        lines += _table(rows)
    if eventing["triggers"]:
        lines.append("")
        rows = [list(_TRIGGER_COLUMNS)] + [
            [
                f"{t['namespace']}/{t['name']}",
                t["broker"],
                t["subscriber"] or "-",
                *(
                    _count(t.get(k))
                    for k in ("delivered", "retried", "dead_lettered", "dropped", "in_flight")
                ),
            ]
            for t in eventing["triggers"]
        ]
        lines += _table(rows)
    if eventing["sources"]:
        lines.append("")
        rows = [["SOURCE", "KIND", "SINK", "SENT", "FAILED"]] + [
            [
                f"{x['namespace']}/{x['name']}",
                x["kind"],
                x["sink"] or "-",
                _count(x.get("sent")),
                _count(x.get("failed")),
            ]
            for x in eventing["sources"]
        ]
        lines += _table(rows)
    for item in (*eventing["brokers"], *eventing["triggers"], *eventing["sources"]):
        if item.get("reason"):
            lines.append(f"  ! {item['namespace']}/{item['name']}: {item['reason']}")
    return lines


def _reason_lines(rev: JSON) -> list[str]:
    """Why pods are not ready (a line per pod), then the revision's own reasons (a replacement held back)."""
    lines: list[str] = []
    shown: set[str] = set()
    for pod in rev["pods"]:
        if pod["reason"]:
            lines.append(f"    ! {pod['name']}: {pod['reason']}")
            shown.add(pod["reason"])
    for reason in rev.get("reasons", []):
        if reason not in shown:
            lines.append(f"    ! {rev['name']}: {reason}")
    return lines


def summary(rev: JSON) -> str:
    """One line per revision for log output; printed again only when it changes."""
    pods = f"{rev['ready_pods']}/{rev['actual_pods']} ready of {rev['desired_pods']} wanted"
    return f"{rev['name']}: traffic {rev['traffic_percent']}%, {pods}, {rev['mode']}"


HISTORY: Final = 1000
"""Events kept for `serving describe` (the view shows the last 10)."""


class LiveView:
    def __init__(
        self, report: Callable[[], JSON], *, out: TextIO | None = None, tty: bool | None = None
    ) -> None:
        self._report = report
        self._out = out or sys.stdout
        self._tty = self._out.isatty() if tty is None else tty
        self._events: deque[str] = deque(maxlen=10)
        self._history: deque[str] = deque(maxlen=HISTORY)
        self._summaries: dict[str, str] = {}
        self.header: list[str] = []
        self._closed = False
        self._drawn = False

    @property
    def tty(self) -> bool:
        return self._tty

    def event(self, line: str) -> None:
        stamped = f"{time.strftime('%H:%M:%S')} {line}"
        self._events.append(stamped)
        self._history.append(stamped)
        if not self._tty or self._closed:
            print(stamped, file=self._out, flush=True)

    def recent(self, words: tuple[str, ...], limit: int = 20) -> list[str]:
        """The last `limit` events that mention any of `words` (for `serving describe`), oldest first."""
        found = [line for line in self._history if any(word in line for word in words)]
        return found[-limit:]

    def close(self) -> None:
        """Stop redrawing: later events (shutdown) are printed as plain lines below the last table."""
        self._closed = True

    def events(self, lines: list[str]) -> None:
        for line in lines:
            self.event(line)

    def refresh(self) -> None:
        report = self._report()
        if self._closed:
            return
        if self._tty:
            # Overwrite in place (home, each line cleared to its end, the rest of the screen cleared): no
            # flicker, unlike clearing the whole screen first.
            text = [*self.header, "", *render(report), "events:", *self._events]
            start = _HOME if self._drawn else _HOME + _CLEAR_SCREEN
            self._drawn = True
            self._out.write(start + "".join(f"{line}{_CLEAR_LINE}\n" for line in text) + _CLEAR_BELOW)
            self._out.flush()
            return
        for service in report["services"]:
            for rev in service["revisions"]:
                line = summary(rev)
                if self._summaries.get(rev["name"]) != line:
                    self._summaries[rev["name"]] = line
                    self.event(line)
