"""`serving up FILE...`: run Services from Knative YAML on this machine, in the foreground, until Ctrl-C.

Nothing starts while any file, flag or the state dir has a problem: each problem is printed on one line and
the exit code is 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import resource
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NoReturn

import uvloop

from controller.local.runtime.container import (
    AUTO,
    CHOICES,
    PROCESS,
    ContainerRuntime,
    RuntimeUnavailable,
    detect,
    needing_runtime,
    pod_problems,
    runtime_problem,
    sources_needing_runtime,
)
from controller.local.system import LocalSystem, Options, bind_ingress, load_local, reset_logs
from controller.local.view import statefile
from controller.local.view.filewatch import FileWatcher
from controller.reconcile.reconciler import apply_problems
from serving import lifecycle
from serving.autoscaling import AutoscalingError, parse_config
from serving.config import ConfigError, load, parse_non_negative_duration
from serving.contract.tracing import Tracing
from serving.events import ContainerSource, EventObject
from serving.service import Manifests, Service, ServiceFileError
from serving.tracer import missing_extra

DEFAULT_PORT = 8080
"""The ingress port of the DESIGN contract: `curl http://NAME.NAMESPACE.localhost:8080/`."""
MAX_WAIT: Final = 3600.0
"""Upper bound of the duration flags, seconds: an hour is past any useful drain or shutdown wait (Knative
drains for 30 s), and keeps the value short enough to reach the queue-proxy as a plain `3600s`."""


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line (the usage of `serving up` alone takes five): the problem, where to look."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}; see `{self.prog} --help`\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is out of range: must be 1-65535, or 0 for any free port")
    return port


def _duration(text: str) -> float:
    """A duration up to `MAX_WAIT`, to the millisecond (pods get it as `DRAIN_QUIET_PERIOD`)."""
    try:
        seconds = parse_non_negative_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 0 <= seconds <= MAX_WAIT:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: must be 0s to 1h")
    return round(seconds, 3)


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} must look like KEY=VALUE (e.g. stable-window=10s)")
    return key.strip(), value.strip()


def _networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (expected CIDR blocks such as 10.0.0.0/8,::1/128)") from None


def parser(prog: str = "serving up", *, live_flag: bool = True) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Run Knative Services from YAML files on this machine.")
    p.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="Service, ConfigMap and Secret YAML files (edits are applied); none: start empty for "
        "`serving apply`",
    )
    p.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="ingress port on 127.0.0.1 (default 8080, 0: any)"
    )
    p.add_argument("--state-dir", help="state and logs (default: $SERVING_STATE_DIR or ./.serving)")
    p.add_argument(
        "--trusted-proxies",
        type=_networks,
        default=(),
        metavar="CIDR,...",
        help="proxies in front of the ingress whose X-Forwarded-*/Forwarded headers are kept (default: none)",
    )
    p.add_argument(
        "--autoscaler-config",
        action="append",
        type=_pair,
        default=[],
        metavar="KEY=VALUE",
        help="a config-autoscaler setting, e.g. scale-to-zero-grace-period=10s (repeatable)",
    )
    p.add_argument(
        "--drain-quiet-period",
        type=_duration,
        default=1.0,
        metavar="DURATION",
        help="how long a stopping pod keeps accepting requests after the last one (default 1s; Knative 30s)",
    )
    p.add_argument(
        "--shutdown-grace",
        type=_duration,
        default=5.0,
        metavar="DURATION",
        help="how long pods and components get to stop on exit before SIGKILL (default 5s)",
    )
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="INFO",
        help="level of the controller's own log in the state dir (default INFO)",
    )
    p.add_argument(
        "--runtime",
        choices=CHOICES,
        default=AUTO,
        help="what runs a container given only an image: auto (podman, else docker, when one works), podman, "
        "docker, or process (every container runs its `command` as a process); default auto",
    )
    p.add_argument(
        "--trace",
        action="store_true",
        help="trace every request and print each trace's hops and waits (needs serving[tracing])",
    )
    if live_flag:
        p.add_argument(
            "--no-live", action="store_true", help="print log lines instead of a redrawn table on a terminal"
        )
    return p


@dataclass(frozen=True, slots=True)
class Prepared:
    options: Options
    manifests: Manifests
    watcher: FileWatcher
    """Stamped before the files were read: an edit made while the system starts is applied once it runs."""


def prepare(args: argparse.Namespace) -> Prepared | int:
    """Validate everything that can be checked before starting; an exit code when something is wrong."""
    files = [Path(f).absolute() for f in args.files]
    watcher = FileWatcher(files)
    pairs = dict(args.autoscaler_config)
    try:
        autoscaler = parse_config(pairs)
    except AutoscalingError as exc:
        print("serving up: invalid --autoscaler-config; nothing was started:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    manifests = Manifests([], [])
    try:
        manifests = load_local(files, autoscaler, args.runtime)
        # At start-up only each template's revision exists: a traffic target naming another fails here.
        problems = apply_problems(manifests.services)
    except ServiceFileError as exc:
        problems = exc.problems
    runtime: ContainerRuntime | None = None
    if not problems:
        runtime, problems = _container_runtime(manifests.services, manifests.events, args.runtime)
    if problems:
        print(f"serving up: {len(problems)} problem(s); nothing was started:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    tracing = _tracing(args.trace)
    if tracing is None:
        return 2
    state_dir = statefile.state_dir(args.state_dir)
    try:
        statefile.ensure_writable(state_dir)
    except OSError as exc:
        print(
            f"serving up: cannot use the state dir {state_dir}: {exc.strerror or exc}; choose another with "
            f"--state-dir (or ${statefile.ENV}); nothing was started",
            file=sys.stderr,
        )
        return 2
    options = Options(
        files=files,
        state_dir=state_dir,
        port=args.port,
        trusted_proxies=args.trusted_proxies,
        autoscaler_config=autoscaler,
        drain_quiet_period=args.drain_quiet_period,
        shutdown_grace=args.shutdown_grace,
        tracing=tracing,
        print_traces=args.trace,
        runtime_choice=args.runtime,
        container_runtime=runtime,
    )
    return Prepared(options, manifests, watcher)


def _container_runtime(
    services: list[Service], events: Sequence[EventObject], choice: str
) -> tuple[ContainerRuntime | None, list[str]]:
    """The runtime for the Services and ContainerSources that run from their images (found by starting a
    container), or their problems when none works. `--runtime podman|docker` is checked even with none of
    them yet, so that a wrong choice fails now rather than at the first edit."""
    needing = needing_runtime(services, choice)
    waiting: list[Service | ContainerSource] = [*needing, *sources_needing_runtime(events, choice)]
    if choice == PROCESS or (choice == AUTO and not waiting):
        return None, []
    try:
        found = asyncio.run(detect(choice))
    except RuntimeUnavailable as exc:
        if not waiting:
            return None, [f"--runtime {choice}: {exc}"]
        return None, [runtime_problem(o, exc) for o in waiting]
    problems = pod_problems(needing, found)
    return (None, problems) if problems else (found, [])


def _tracing(print_traces: bool) -> Tracing | None:
    """The components' tracing settings from this process's `SERVING_TRACING_*`; None (after saying why)
    when they are invalid, or when tracing is asked for and OpenTelemetry is not installed."""
    try:
        tracing = load(Tracing, os.environ)
    except ConfigError as exc:
        print("serving up: invalid tracing settings; nothing was started:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None
    why = missing_extra() if tracing.enabled or print_traces else None
    if why is not None:
        print(f"serving up: {why}; nothing was started", file=sys.stderr)
        return None
    return tracing


def raise_file_limit() -> None:
    """Every request crosses up to three local proxies, each holding two connections: allow as many open
    files as the hard limit permits (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def launch(prepared: Prepared, *, live: bool, log_level: str) -> int:
    options = prepared.options
    running = statefile.read(options.state_dir)
    if running is not None:
        print(
            f"serving up: already running in {options.state_dir} (pid {running.pid}); "
            "stop it or use --state-dir",
            file=sys.stderr,
        )
        return 1
    try:
        sock = bind_ingress(options.port)
    except OSError as exc:
        print(
            f"serving up: cannot listen on 127.0.0.1:{options.port} ({exc.strerror}); try --port",
            file=sys.stderr,
        )
        return 1
    with sock:
        raise_file_limit()
        reset_logs(options.state_dir)
        log_dir = options.state_dir / statefile.LOG_DIR
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            logging.basicConfig(
                level=log_level.upper(),
                filename=log_dir / "controller.log",
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                force=True,
            )
        except OSError as exc:  # e.g. a logs folder left by another user
            print(f"serving up: cannot write logs in {log_dir}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        system = LocalSystem(options, live=live, watcher=prepared.watcher)
        lifecycle.settle_collector()
        return uvloop.run(system.run(prepared.manifests, sock))


def run(args: argparse.Namespace, *, live: bool) -> int:
    """Validate, then run until stopped: the body of `serving up` and `serving controller`."""
    try:
        prepared = prepare(args)
        if isinstance(prepared, int):
            return prepared
        return launch(prepared, live=live, log_level=args.log_level)
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed: nothing runs yet
        return 130


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return run(args, live=not args.no_live)
