"""How many requests per second one core can drive with the benchmark load generator, against an
aiohttp-client generator doing the same open-loop schedule (the alternative it was chosen over).

Both run under uvloop against a minimal HTTP server in another process (so the server is never the limit),
for 5 s per rate, and report the achieved rate, the generator's CPU time per request, and its worst send
delay. Results go to benchmarks/results/bench/loadgen-capacity.md with the command that produced them.

    python benchmarks/loadgen_capacity.py [--rates 1000,3000,6000,10000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop

from bench.load.generator import LoadGenerator
from bench.load.schedule import Target, constant_rate
from bench.system import machine
from controller.local.runtime.port import PortAllocator

RESULTS = Path(__file__).resolve().parent / "results" / "bench" / "loadgen-capacity.md"

_SERVER = """
import asyncio, sys, uvloop
RESP = b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok"
class P(asyncio.Protocol):
    def connection_made(self, t): self.t, self.buf = t, b""
    def data_received(self, d):
        self.buf += d
        while b"\\r\\n\\r\\n" in self.buf:
            _, _, self.buf = self.buf.partition(b"\\r\\n\\r\\n")
            self.t.write(RESP)
async def main():
    s = await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]))
    await s.serve_forever()
uvloop.run(main())
"""

Row = tuple[str, float, float, float, float, int]
"""(generator, asked rps, achieved rps, CPU µs per request, worst send delay ms, errors)"""


async def _raw(port: int, rate: float, seconds: float) -> tuple[float, float, int]:
    gen = LoadGenerator(timeout=5)
    samples = await gen.run(constant_rate([Target(name="x", port=port)], rate, seconds))
    # Past what the machine can carry, requests pile up to the cap on requests in flight and the rest
    # are recorded as client-cap errors rather than sent late.
    return gen.stats.achieved_rate, gen.stats.max_send_lag, sum(1 for s in samples if not s.ok)


async def _aiohttp(port: int, rate: float, seconds: float) -> tuple[float, float, int]:
    errors = 0
    lag = 0.0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=10_000)) as session:

        async def one() -> None:
            nonlocal errors
            try:
                async with session.get(f"http://127.0.0.1:{port}/") as resp:
                    await resp.read()
                    errors += resp.status != 200
            except (aiohttp.ClientError, OSError):
                errors += 1

        tasks = []
        t0 = time.monotonic() + 0.01
        count = round(rate * seconds)
        for i in range(count):
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            lag = max(lag, time.monotonic() - due)
            tasks.append(asyncio.create_task(one()))
        span = time.monotonic() - t0
        await asyncio.gather(*tasks)
    return (count - 1) / span, lag, errors


async def _measure(
    name: str,
    run: Callable[[int, float, float], Awaitable[tuple[float, float, int]]],
    port: int,
    rate: float,
    seconds: float,
) -> Row:
    cpu0 = time.process_time()
    achieved, lag, errors = await run(port, rate, seconds)
    cpu = time.process_time() - cpu0
    return (name, rate, achieved, cpu / (rate * seconds) * 1e6, lag * 1000, errors)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="1000,3000,6000,10000", help="comma-separated request rates")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    port = PortAllocator().allocate()
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(port)])
    rows: list[Row] = []
    try:
        time.sleep(1.0)
        load_before = machine.load_average()
        for rate in rates:
            for name, run in (
                ("serving bench (asyncio protocol + httptools)", _raw),
                ("aiohttp client", _aiohttp),
            ):
                row = uvloop.run(_measure(name, run, port, rate, args.seconds))
                rows.append(row)
                print(
                    f"{row[0]:<46} asked {row[1]:>7.0f} achieved {row[2]:>7.0f} rps  "
                    f"{row[3]:6.1f} µs CPU/request  worst send delay {row[4]:8.1f} ms  errors {row[5]}"
                )
        load_after = machine.load_average()
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(5)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Load generator capacity (one core)",
        "",
        f"Command: `{shlex.join(['python', *sys.argv])}`, run {stamp}.",
        "",
        f"Machine: {machine.current().describe()}; load average before {load_before[0]:.2f}, after "
        f"{load_after[0]:.2f} (shared machine).",
        "Server: a minimal uvloop HTTP/1.1 responder in another process.",
        "",
        "Errors of the first generator past its capacity are `client-cap`: requests not sent because 10,000",
        "were already in flight (it never sends late to keep up).",
        "",
        "| generator | asked rps | achieved rps | CPU µs / request | worst send delay ms | errors |",
        "|---|---|---|---|---|---|",
        *[f"| {r[0]} | {r[1]:.0f} | {r[2]:.0f} | {r[3]:.1f} | {r[4]:.1f} | {r[5]} |" for r in rows],
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"written to {os.path.relpath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
