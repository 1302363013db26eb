"""Benchmark: the autoscaler's scraper keeping up with many pods (target: 1,000 pods scraped every second
without falling behind).

A fleet of fake queue-proxy stats endpoints runs as a separate process (`tests/fakes/statfleet.py`: a port per
pod, answering with a fixed `Stat` from a bare protocol so that the fleet's own HTTP stack is not what gets
measured; `--aiohttp-fleet` serves it with aiohttp instead). This process runs the real `Multiscaler` +
`Scraper` on uvloop with its keep-alive stat client. As in the running autoscaler, a tick every second starts
every revision not still busy and does not wait; the benchmark records when each tick's scrapes have all
finished, how many scrapes had to be skipped because the previous one was still running (falling behind), and
the scraper's CPU per second. Two layouts: 1,000 revisions of one pod (every pod scraped each second) and 10
revisions of 100 pods (sampled). Results are appended to benchmarks/results/autoscaler.md with the command.

    python benchmarks/autoscaler_scrape.py [--pods 1000] [--ticks 20] [--aiohttp-fleet] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402  # after the path set-up above
from prometheus_client import CollectorRegistry  # noqa: E402

from autoscaler.multiscaler import Multiscaler  # noqa: E402
from autoscaler.probe import AssumeActivatorInPath  # noqa: E402
from autoscaler.scraper import Scraper, ScrapeResult  # noqa: E402
from autoscaler.statclient import StatClient  # noqa: E402
from serving.autoscaling import parse_config  # noqa: E402
from serving.clock import MonotonicClock  # noqa: E402
from serving.platform import Pod, Revision, RevisionKey, ScalerStatus, Snapshot  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "autoscaler.md"


class NullActuator:
    async def scale(self, key: RevisionKey, replicas: int, remove: list[str]) -> None:
        return None

    async def publish(self, key: RevisionKey, status: ScalerStatus) -> None:
        return None


@dataclass
class Layout:
    revisions: int
    pods_per_revision: int


@dataclass
class Result:
    layout: Layout
    requests_per_tick: float
    durations_ms: list[float]
    """Per tick: from its start until every scrape it started had finished."""
    cpu_ms_per_second: float
    skipped: int
    """Revision scrapes skipped because the previous one was still running (falling behind)."""
    recorded: int
    """Revisions whose windows got data."""


def snapshot(layout: Layout, fleet: list[dict[str, object]]) -> Snapshot:
    started = time.time() - 3600
    revisions = []
    for r in range(layout.revisions):
        key = RevisionKey("bench", f"rev-{r:04d}")
        members = fleet[r * layout.pods_per_revision : (r + 1) * layout.pods_per_revision]
        pods = tuple(
            Pod(
                name=str(m["name"]),
                host="127.0.0.1",
                port=int(str(m["port"])),
                stats_port=int(str(m["port"])),
                admin_port=int(str(m["port"])),
                ready=True,
                started_at=started,
            )
            for m in members
        )
        revisions.append(Revision(key=key, service=key.name, configuration=key.name, pods=pods))
    return Snapshot(1, tuple(revisions))


async def run_layout(layout: Layout, fleet: list[dict[str, object]], ticks: int) -> Result:
    client = StatClient(timeout=1.0)
    try:
        counting = _CountingScraper(Scraper(client))
        multiscaler = Multiscaler(
            actuator=NullActuator(),
            scraper=counting,
            config=parse_config({}),
            clock=MonotonicClock(),
            registry=CollectorRegistry(),
            activator_probe=AssumeActivatorInPath(),
        )
        multiscaler.apply_snapshot(snapshot(layout, fleet))
        await multiscaler.scrape_once()  # open the keep-alive connections
        counting.requests = 0
        durations: list[float] = []
        skipped = 0
        watchers = []

        async def watch(tasks: list[asyncio.Task[None]], started: float) -> None:
            await asyncio.gather(*tasks)
            durations.append((time.monotonic() - started) * 1000)

        cpu_started = time.process_time()
        next_tick = time.monotonic()
        for _ in range(ticks):
            # As the scrape loop does: start every revision not still busy, then wait for the next second.
            started = time.monotonic()
            tasks = multiscaler.scrape_tick()
            skipped += layout.revisions - len(tasks)
            watchers.append(asyncio.create_task(watch(tasks, started)))
            next_tick += 1.0
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        await asyncio.gather(*watchers)
        cpu_per_second = (time.process_time() - cpu_started) * 1000 / ticks
        recorded = sum(
            1
            for key in multiscaler.revisions
            if (s := multiscaler.scaler(key)) is not None
            and s.collection.stable_and_panic("concurrency", time.monotonic()) is not None
        )
        await multiscaler.aclose()
        return Result(layout, counting.requests / ticks, durations, cpu_per_second, skipped, recorded)
    finally:
        client.close()


class _CountingScraper:
    """Counts the pod requests the real scraper makes."""

    def __init__(self, scraper: Scraper) -> None:
        self._scraper = scraper
        self.requests = 0

    async def scrape(self, pods: Sequence[Pod], window: float, wall_now: float) -> ScrapeResult | None:
        result = await self._scraper.scrape(pods, window, wall_now)
        if result is not None:
            self.requests += result.sampled
        return result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main_async(pods: int, ticks: int, lean: bool) -> list[Result]:
    fleet_process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.statfleet",
        "--pods",
        str(pods),
        *(["--lean"] if lean else []),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert fleet_process.stdout is not None
        line = await asyncio.wait_for(fleet_process.stdout.readline(), 120)
        fleet = json.loads(line)
        layouts = [Layout(pods, 1), Layout(max(1, pods // 100), 100)]
        return [await run_layout(layout, fleet, ticks) for layout in layouts]
    finally:
        fleet_process.terminate()
        await fleet_process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument(
        "--aiohttp-fleet",
        action="store_true",
        help="serve the fleet with aiohttp (measures that server's speed as well as the scraper's)",
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    results = uvloop.run(main_async(args.pods, args.ticks, lean=not args.aiohttp_fleet))
    command = " ".join(["python benchmarks/autoscaler_scrape.py", *map(shlex.quote, sys.argv[1:])])
    lines = [f"### Scrape tick, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "", f"`{command}`", ""]
    kept_up = True
    for r in results:
        kept_up &= r.skipped == 0 and r.recorded == r.layout.revisions
        lines.append(
            f"- {r.layout.revisions} revisions x {r.layout.pods_per_revision} pods: "
            f"{r.requests_per_tick:.0f} pod scrapes per second; a tick's scrapes done in p50 "
            f"{statistics.median(r.durations_ms):.0f} ms, p95 {percentile(r.durations_ms, 0.95):.0f} ms, "
            f"max {max(r.durations_ms):.0f} ms; scraper CPU {r.cpu_ms_per_second:.0f} ms per second; "
            f"{r.skipped} revision scrapes skipped (still running at the next tick); "
            f"{r.recorded}/{r.layout.revisions} revisions recorded"
        )
    lines += [
        f"- {'kept up' if kept_up else 'FELL BEHIND'}: no scrape was still running when its next tick came",
        f"- machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end of the run",
        "",
    ]
    print("\n".join(lines))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as out:
            out.write("\n".join(lines) + "\n")
    return 0 if kept_up else 1


if __name__ == "__main__":
    sys.exit(main())
