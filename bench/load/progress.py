"""A progress line on stderr while a benchmark phase runs: redrawn in place on a terminal, periodic lines
otherwise (CI logs), so long runs show they are alive without flooding the log.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TextIO

_TTY_INTERVAL: Final = 0.25
_LOG_INTERVAL: Final = 5.0
_BAR_WIDTH: Final = 24


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    sent: int
    done: int
    errors: int
    outstanding: int


def render(label: str, elapsed: float, total: float, snap: Snapshot, *, bar: bool) -> str:
    fraction = min(elapsed / total, 1.0) if total > 0 else 1.0
    rate = snap.sent / elapsed if elapsed > 0 else 0.0
    text = (
        f"{label} {elapsed:5.1f}/{total:.0f}s sent {snap.sent} done {snap.done} "
        f"errors {snap.errors} in-flight {snap.outstanding} ({rate:,.0f} rps)"
    )
    if bar:
        filled = int(fraction * _BAR_WIDTH)
        text = f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] " + text
    return text


class Progress:
    """Shows `label` with counts from `state()` while the `async with` body runs; `total` seconds gives the
    bar its length, counted from `start` (a `time.monotonic()` value; default: entering the block)."""

    def __init__(
        self,
        label: str,
        total: float,
        state: Callable[[], Snapshot],
        stream: TextIO | None = None,
        *,
        enabled: bool = True,
        start: float | None = None,
    ) -> None:
        self._label = label
        self._total = total
        self._state = state
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._enabled = enabled
        self._task: asyncio.Task[None] | None = None
        self._start = start

    async def __aenter__(self) -> Progress:
        if self._start is None:
            self._start = time.monotonic()
        if self._enabled:
            self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        if self._enabled:
            self._draw(final=True)

    def _draw(self, *, final: bool = False) -> None:
        elapsed = max(time.monotonic() - (self._start or 0.0), 0.0)
        line = render(self._label, elapsed, self._total, self._state(), bar=self._tty)
        if self._tty:
            self._stream.write("\r\x1b[2K" + line + ("\n" if final else ""))
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    async def _run(self) -> None:
        interval = _TTY_INTERVAL if self._tty else _LOG_INTERVAL
        while True:
            await asyncio.sleep(interval)
            self._draw()
