from __future__ import annotations

import io

from bench.load.progress import Progress, Snapshot, render


def test_render_shows_counts_rate_and_bar() -> None:
    snap = Snapshot(sent=500, done=480, errors=2, outstanding=20)
    line = render("dataplane-probe", 5.0, 10.0, snap, bar=True)
    assert line.startswith("[############............] dataplane-probe   5.0/10s")
    assert "sent 500 done 480 errors 2 in-flight 20 (100 rps)" in line
    assert not render("x", 5.0, 10.0, snap, bar=False).startswith("[")


async def test_progress_off_a_terminal_writes_whole_lines() -> None:
    stream = io.StringIO()
    snap = Snapshot(sent=3, done=3, errors=0, outstanding=0)
    async with Progress("phase", 1.0, lambda: snap, stream):
        pass
    out = stream.getvalue()
    assert out.endswith("\n")
    assert "\r" not in out
    assert "phase" in out
    assert "sent 3 done 3" in out


async def test_disabled_progress_writes_nothing() -> None:
    stream = io.StringIO()
    async with Progress(
        "phase", 1.0, lambda: Snapshot(sent=0, done=0, errors=0, outstanding=0), stream, enabled=False
    ):
        pass
    assert stream.getvalue() == ""
