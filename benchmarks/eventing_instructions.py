"""Benchmark: user-space instructions per event of the eventing component, counted under cachegrind.

One process holds what an event crosses inside the eventing component: the Broker ingress on the forwarding
engine, the embedded store with its group commit, and one Trigger's dispatcher with its delivery client. The
Trigger delivers straight to `benchmarks/eventing_sink.py` (no router, no queue-proxy: those are measured by
`benchmarks/dataplane.py`). `wrk` posts the binary-mode CloudEvents of `benchmarks/eventing.py` for a fixed
time; the process runs under cachegrind twice, idle and loaded, and (loaded - idle) / events is the figure.
Instruction counts do not depend on what else the machine runs, unlike CPU time, so two checkouts compare in
one number on a busy machine. `--accept-only` leaves the Trigger without a subscriber (events wait in the
log): the ingress and the store alone. `--python` runs another checkout's eventing modules (an interpreter
whose environment has that checkout installed), for a before/after in one run.

    python benchmarks/eventing_instructions.py [--seconds 10] [--connections 10] [--runs 2] [--accept-only]
        [--python PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BROKER = ("default", "bench")
DRAIN_S = 120.0
"""Longest wait, once the producers stopped, for the Trigger to deliver what was accepted."""


# --- the component, run under cachegrind ----------------------------------------------------------------


async def component(port: int, sink_port: int | None) -> None:
    """Serve the Broker until SIGTERM, then wait for the backlog to be delivered and print the counts."""
    from prometheus_client import CollectorRegistry

    from eventing.delivery import Deliverer

    try:
        from eventing.session import client_session
    except ImportError:  # a checkout from before eventing.session (measured with --python)
        from eventing.delivery import client_session  # type: ignore[attr-defined,no-redef]
    from eventing.ingress import Ingress
    from eventing.metrics import EventingMetrics
    from eventing.registry import Registry
    from eventing.store import EventStore
    from serving.contract.eventing import BrokerSpec, EventingSpec, TriggerSpec
    from serving.events import EMBEDDED_CLASS
    from serving.http import serve

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    subscriber = None if sink_port is None else f"http://127.0.0.1:{sink_port}/"
    spec = EventingSpec(
        brokers=(BrokerSpec(*BROKER, EMBEDDED_CLASS),),
        triggers=(TriggerSpec(BROKER[0], "bench-trigger", BROKER[1], subscriber),),
    )
    with tempfile.TemporaryDirectory() as root:
        store = EventStore(Path(root))
        await store.start()
        metrics = EventingMetrics(CollectorRegistry())
        async with client_session() as session:
            deliverer = Deliverer(session)
            registry = Registry(store, deliverer, metrics)
            await registry.apply(spec)
            server = await serve(Ingress(registry, metrics), "127.0.0.1", port)
            print("READY", flush=True)
            await stop.wait()
            server.close()
            await server.wait_closed()
            accepted = delivered = 0
            deadline = time.monotonic() + DRAIN_S
            while time.monotonic() < deadline:
                accepted = sum(registry.accepted.values())
                delivered = sum(running.dispatcher.counts.delivered for running in registry.triggers.values())
                if sink_port is None or delivered >= accepted:
                    break
                await asyncio.sleep(0.1)
            print("COUNTS " + json.dumps({"accepted": accepted, "delivered": delivered}), flush=True)
            await registry.close()
            deliverer.close()


# --- the driver --------------------------------------------------------------------------------------------


def counted(
    python: str, port: int, sink_port: int | None, script: Path, seconds: float, connections: int
) -> tuple[int, int]:
    """(instructions, events) of one run of the component under cachegrind; no load when `seconds` is 0.
    Events are those delivered, or accepted when there is no subscriber. The component listens on `port`."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "cachegrind.out"
        argv = [
            "valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}",
            python, str(Path(__file__).resolve()), "component", "--port", str(port),
        ]  # fmt: skip
        if sink_port is not None:
            argv += ["--sink-port", str(sink_port)]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "READY":
                raise RuntimeError("the component did not start")
            time.sleep(1.0)
            if seconds:
                url = f"http://127.0.0.1:{port}/{BROKER[0]}/{BROKER[1]}"
                wrk = [
                    "wrk",
                    "-t1",
                    f"-c{connections}",
                    f"-d{seconds:g}s",
                    "--timeout",
                    "30s",
                    "-s",
                    str(script),
                ]
                subprocess.run([*wrk, url, "--", "e"], capture_output=True, check=True, timeout=seconds + 60)
            process.send_signal(signal.SIGTERM)
            line = process.stdout.readline()
            process.wait(timeout=DRAIN_S + 60)
        finally:
            if process.poll() is None:
                process.kill()
        if not line.startswith("COUNTS "):
            raise RuntimeError("the component gave no counts")
        counts = json.loads(line.split(" ", 1)[1])
        summary = re.search(r"^summary:\s+(\d+)", out.read_text(), re.M)
        if summary is None:
            raise RuntimeError("cachegrind wrote no summary")
        events = counts["accepted"] if sink_port is None else counts["delivered"]
        if sink_port is not None and counts["delivered"] < counts["accepted"]:
            raise RuntimeError(
                f"only {counts['delivered']} of {counts['accepted']} accepted events were delivered"
            )
        return int(summary.group(1)), events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode")
    run = sub.add_parser("component", help="(internal) the process under cachegrind")
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--sink-port", type=int)
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of load per loaded run")
    parser.add_argument("--connections", type=int, default=10, help="wrk connections (producers)")
    parser.add_argument("--runs", type=int, default=2, help="loaded runs (one idle run is subtracted)")
    parser.add_argument("--accept-only", action="store_true", help="no subscriber: ingress and store only")
    parser.add_argument("--python", default=sys.executable, help="interpreter whose eventing is measured")
    args = parser.parse_args()
    if args.mode == "component":
        import uvloop

        # This folder's eventing.py (the throughput benchmark) would hide the eventing package.
        sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
        from serving.lifecycle import settle_collector

        settle_collector()  # as every component process does before its loop starts

        uvloop.run(component(args.port, args.sink_port))
        return 0

    sys.path.insert(0, str(HERE.parent))  # the driver only: the component imports the measured checkout's
    from benchmarks.dataplane import free_port, wait_listening
    from benchmarks.eventing import wrk_script

    with tempfile.TemporaryDirectory() as scratch:
        script = wrk_script(Path(scratch), "events", f"/{BROKER[0]}/{BROKER[1]}", "broker-ingress.localhost")
        sink_port = None if args.accept_only else free_port()
        sink = None
        if sink_port is not None:
            env = {**os.environ, "PORT": str(sink_port)}
            sink = subprocess.Popen([sys.executable, str(HERE / "eventing_sink.py")], env=env)
            wait_listening(sink_port)
        try:
            idle, _ = counted(args.python, free_port(), sink_port, script, 0, args.connections)
            per_event = []
            for run_number in range(1, args.runs + 1):
                loaded, events = counted(
                    args.python, free_port(), sink_port, script, args.seconds, args.connections
                )
                per_event.append((loaded - idle) / max(events, 1))
                print(
                    f"run {run_number}: {events} events, {per_event[-1]:,.0f} instructions per event",
                    flush=True,
                )
        finally:
            if sink is not None:
                sink.terminate()
                sink.wait()
    what = "accepted (ingress and store only)" if args.accept_only else "delivered"
    print(f"median: {statistics.median(per_event):,.0f} instructions per event {what}, {args.python}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
