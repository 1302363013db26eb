"""Benchmark: CPU time of one decider tick of the autoscaler for many revisions (target: 1,000 revisions of
100 pods each in <= 50 ms of CPU).

A `Multiscaler` holds the revisions, with a full stable window of load recorded for each; a tick is
`decide_all()`: the windows' averages, the KPA decision, the scale-to-zero reconcile and the status
bookkeeping, exactly as in the running autoscaler (Prometheus gauges are read only when scraped). Platform
calls go to an in-process counter (they run in their own tasks in production). The load changes a little
every tick so every revision is decided on.
Results are appended to benchmarks/results/autoscaler.md with the command.

    python benchmarks/autoscaler_decider.py [--revisions 1000] [--pods 100] [--runs 20] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402  # after the path set-up above

from autoscaler.multiscaler import Multiscaler  # noqa: E402
from autoscaler.probe import AssumeActivatorInPath  # noqa: E402
from autoscaler.scraper import ScrapeResult  # noqa: E402
from serving.autoscaling import parse_config  # noqa: E402
from serving.clock import FakeClock  # noqa: E402
from serving.platform import Pod, Revision, RevisionKey, ScalerStatus, Snapshot  # noqa: E402
from serving.stat import Stat  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "autoscaler.md"
TARGET_MS = 50.0


class CountingActuator:
    def __init__(self) -> None:
        self.scales = 0
        self.publishes = 0

    async def scale(self, key: RevisionKey, replicas: int, remove: list[str]) -> None:
        self.scales += 1

    async def publish(self, key: RevisionKey, status: ScalerStatus) -> None:
        self.publishes += 1


class NoScraper:
    async def scrape(self, pods: object, window: float, wall_now: float) -> ScrapeResult | None:
        return None


def revisions(count: int, pods: int) -> Snapshot:
    now = time.time()
    result = []
    for r in range(count):
        key = RevisionKey("bench", f"rev-{r:05d}")
        members = tuple(
            Pod(
                name=f"{key.name}-{p}",
                host="10.0.0.1",
                port=8012,
                stats_port=9090,
                admin_port=8022,
                ready=True,
                started_at=now - 3600,
            )
            for p in range(pods)
        )
        result.append(Revision(key=key, service=key.name, configuration=key.name, pods=members))
    return Snapshot(1, tuple(result))


async def measure(count: int, pods: int, runs: int) -> tuple[list[float], CountingActuator]:
    clock = FakeClock(1_000_000.0)
    actuator = CountingActuator()
    scaler = Multiscaler(
        actuator=actuator,
        scraper=NoScraper(),
        config=parse_config({}),
        clock=clock,
        registry=CollectorRegistry(),
        activator_probe=AssumeActivatorInPath(),
    )
    snapshot = revisions(count, pods)
    scaler.apply_snapshot(snapshot)
    rng = random.Random(1)
    keys = [r.key for r in snapshot.revisions]
    per_pod = 70.0  # each revision carries about its 100 pods' worth
    # A stable window of history for every revision.
    for _ in range(60):
        clock.advance(1.0)
        for key in keys:
            collection = scaler.scaler(key)
            assert collection is not None
            collection.record(
                clock.now(), Stat(average_concurrent_requests=pods * per_pod * rng.uniform(0.9, 1.1))
            )
    await scaler.decide_all()
    await scaler.settle()
    times = []
    for _ in range(runs):
        for _ in range(2):  # the scraper's two seconds between ticks (not timed)
            clock.advance(1.0)
            for key in keys:
                load = pods * per_pod * rng.uniform(0.9, 1.1)
                revision = scaler.scaler(key)
                assert revision is not None
                revision.record(clock.now(), Stat(average_concurrent_requests=load))
        started = time.process_time()
        await scaler.decide_all()
        times.append((time.process_time() - started) * 1000)
        await scaler.settle()
    await scaler.aclose()
    return times, actuator


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--revisions", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    times, actuator = asyncio.run(measure(args.revisions, args.pods, args.runs))
    median, worst = statistics.median(times), max(times)
    verdict = "meets" if median <= TARGET_MS else "MISSES"
    lines = [
        f"### Decider tick, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"`python benchmarks/autoscaler_decider.py {shlex.join(sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"- {args.revisions} revisions x {args.pods} ready pods, {args.runs} ticks "
        "(CPU time, `time.process_time`)",
        f"- median {median:.1f} ms, best {min(times):.1f} ms, worst {worst:.1f} ms per tick "
        f"({median / args.revisions * 1000:.1f} us per revision); {verdict} the {TARGET_MS:.0f} ms target",
        f"- platform calls over the run: {actuator.scales} scale, {actuator.publishes} status",
        f"- machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end of the run",
        "",
    ]
    print("\n".join(lines))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as out:
            out.write("\n".join(lines) + "\n")
    return 0 if median <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
