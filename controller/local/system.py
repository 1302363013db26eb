"""The whole local system in one process tree: platform API, activator, autoscaler, supervisor and router.

`LocalSystem.run` starts the parts in dependency order (the platform API first, since both components
watch it; then the autoscaler, whose websocket the activator needs; then the Services and the ingress),
follows edits of the Service files, and on SIGINT/SIGTERM stops in reverse order: the ingress stops
accepting, pods drain and stop, components stop, and every child process group is gone before it returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import ipaddress
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final, TypeVar

import aiohttp
from aiohttp import web

from controller.ingress.router import Router
from controller.local.component import Component, ComponentFailed
from controller.local.controlserver import Conflict, NotFound, control_app
from controller.local.describe import describe_config, describe_event, describe_service
from controller.local.desired import Desired, ObjectKey, key_of, objects
from controller.local.eventing import EventingView, resolve_local
from controller.local.platformserver import PlatformServer
from controller.local.queuegauge import QueueGauge
from controller.local.runtime.container import (
    AUTO,
    ContainerLauncher,
    ContainerRuntime,
    RuntimeUnavailable,
    detect,
    local_event_object_problems,
    local_service_problems,
    needing_runtime,
    pod_problems,
    runtime_problem,
    sources_needing_runtime,
    sweep,
    sweep_installed,
)
from controller.local.runtime.forkserver import ForkServer
from controller.local.runtime.port import PortAllocator
from controller.local.runtime.probe import QueueProxyProbe
from controller.local.runtime.process import OsLauncher
from controller.local.runtime.revisions import LocalRuntime, LocalSettings
from controller.local.runtime.supervisor import Supervisor
from controller.local.sources import ContainerSources
from controller.local.store import Store
from controller.local.view import statefile
from controller.local.view.filewatch import FileWatcher
from controller.local.view.liveview import LiveView
from controller.local.view.report import JSON, StatusReport
from controller.local.view.tracereceiver import TraceReceiver
from controller.reconcile.eventing import EventingFeed
from controller.reconcile.reconciler import ApplyError, Reconciler, ReconcilerSettings
from controller.reconcile.routetable import RouteTable
from serving.autoscaling import DEFAULT, AutoscalerConfig
from serving.configdata import ConfigData
from serving.contract.activator import ActivatorConfig
from serving.contract.autoscaler import Settings as AutoscalerSettings
from serving.contract.eventing import BROKER_HOST, WEBHOOK_HOST, EventingConfig
from serving.contract.tracing import OFF, TRACES_PATH, Tracing
from serving.events import ContainerSource, EventObject
from serving.http import Server, serve
from serving.service import Manifests, Service, ServiceFileError, load_manifests, parse_manifests
from serving.tracer import Tracer, start_tracing

log = logging.getLogger(__name__)

EVENTING_GRACE = 10.0
"""Seconds the eventing component gets to stop its Triggers and flush its logs before SIGKILL."""
EVENTING_DIR = "eventing"
"""Under the state dir: the embedded Brokers' logs and the Triggers' positions, kept across runs."""
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    files: list[Path]
    state_dir: Path
    port: int = 8080
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    """Peers whose `X-Forwarded-*`/`Forwarded` headers the ingress keeps (none: all are replaced)."""
    autoscaler_config: AutoscalerConfig = DEFAULT
    drain_quiet_period: float = 1.0
    """Queue-proxy drain quiet period, seconds (Knative's 30 s waits for load balancers; 1 s does here)."""
    activator_drain: float = 1.0
    """Activator readiness-fail period after SIGTERM, seconds (Knative 30 s)."""
    shutdown_grace: float = 5.0
    """Seconds pods and components get to stop when `serving up` exits, before SIGKILL."""
    ready_timeout: float = 60.0
    """Seconds the activator and autoscaler get to become ready at start-up."""
    poll_interval: float = 1.0
    """Seconds between checks of the Service files for edits."""
    tracing: Tracing = OFF
    """Where the router, the activator and the queue-proxies send spans (from `SERVING_TRACING_*`)."""
    print_traces: bool = False
    """`--trace`: receive the spans here instead, and print each finished trace among the events."""
    runtime_choice: str = AUTO
    """`--runtime`: which user containers run from their images (`container.runs_as_container`)."""
    container_runtime: ContainerRuntime | None = None
    """The container runtime found to work, when one is needed."""


TRACE_EXPORT_INTERVAL: Final = 0.5
"""Seconds between span exports with `--trace`: a trace is printed about a second after it ends."""


def load_services(
    paths: Sequence[Path], autoscaler: AutoscalerConfig = DEFAULT, runtime_choice: str = AUTO
) -> list[Service]:
    """`load_local(...).services`."""
    return load_local(paths, autoscaler, runtime_choice).services


def load_local(
    paths: Sequence[Path], autoscaler: AutoscalerConfig = DEFAULT, runtime_choice: str = AUTO
) -> Manifests:
    """Parse and validate every file, including what only the local platform cannot run (which depends on
    what runs as a container under `--runtime`); annotations are checked against the cluster-wide autoscaler
    settings in force (e.g. allow-zero-initial-scale)."""
    return load_manifests(
        paths,
        config=autoscaler,
        checks=(partial(local_service_problems, runtime_choice=runtime_choice),),
        event_checks=(partial(local_event_object_problems, runtime_choice=runtime_choice),),
    )


def bind_ingress(port: int) -> socket.socket:
    """Bind and listen on the ingress port before anything starts: a busy port fails fast and clearly, and a
    request sent while the system starts waits in the listen backlog instead of being refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    sock.listen(1024)
    return sock


class _ViewHandler(logging.Handler):
    """Shows the controller's warnings (pod crashes, component restarts) among the live view's events."""

    def __init__(self, view: LiveView) -> None:
        super().__init__(logging.WARNING)
        self._view = view

    def emit(self, record: logging.LogRecord) -> None:
        self._view.event(record.getMessage())


@dataclass(slots=True, kw_only=True, eq=False)
class _Parts:
    """The running pieces of one `serving up`."""

    supervisor: Supervisor
    forkserver: ForkServer
    """Forks the pods' queue-proxies; stopped after the pods."""
    platform: web.AppRunner
    platform_url: str
    control: web.AppRunner
    components: tuple[Component, Component]
    """(autoscaler, activator): started in this order, the activator needing the autoscaler."""
    eventing: Component
    """Brokers, Triggers and sources: started when the first Eventing object appears."""
    eventing_port: int
    eventing_admin: int
    feed: EventingFeed
    eventing_view: EventingView
    sources: ContainerSources
    session: aiohttp.ClientSession
    router: Router
    reconciler: Reconciler
    runtime: LocalRuntime
    gauge: QueueGauge
    report: StatusReport
    view: LiveView
    tracer: Tracer | None = None
    """The router's spans (the router runs in this process)."""
    traces: TraceReceiver | None = None
    traces_site: web.AppRunner | None = None
    """`--trace`: the OTLP/HTTP receiver every component exports to."""
    server: Server | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class LocalSystem:
    def __init__(self, options: Options, *, live: bool, watcher: FileWatcher | None = None) -> None:
        """`watcher` should be made before the files were first read, so no edit is missed in between."""
        self.options = options
        self._live = live
        self._watcher = watcher or FileWatcher(options.files)
        self._stop = asyncio.Event()
        self._signals = 0
        self.log_dir = options.state_dir / statefile.LOG_DIR
        self._desired = Desired()
        self._control_token = secrets.token_hex(16)
        self._changing = asyncio.Lock()
        """Held while a change (an edit of the files, an apply, a delete) is checked and applied."""
        self._parts: _Parts | None = None
        self._eventing_task: asyncio.Task[None] | None = None
        self._eventing_started = asyncio.Event()

    def _on_signal(self) -> None:
        self._signals += 1
        if self._signals > 1:
            print("serving up: second interrupt, killing everything now", file=sys.stderr, flush=True)
        self._stop.set()

    async def run(self, manifests: Manifests, sock: socket.socket) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        async with aiohttp.ClientSession() as session:
            try:
                return await self._run(session, manifests, sock)
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    async def _run(self, session: aiohttp.ClientSession, manifests: Manifests, sock: socket.socket) -> int:
        parts = self._parts = await self._assemble(session, sock)
        try:
            stop = asyncio.create_task(self._stop.wait())
            start = asyncio.create_task(self._start(parts, manifests, sock))
            await asyncio.wait((stop, start), return_when=asyncio.FIRST_COMPLETED)
            if not start.done():  # interrupted while starting
                start.cancel()
                await asyncio.gather(start, return_exceptions=True)
                return 0
            stop.cancel()
            if not start.result():
                return 1
            return await self._serve_until_stopped(parts)
        finally:
            await self._teardown(parts)

    async def _assemble(self, session: aiohttp.ClientSession, sock: socket.socket) -> _Parts:
        """Build every part and start the in-process APIs (platform, control)."""
        opts = self.options
        # This run's probe secret: pods' queue-proxies answer probes only with their revision's token from it
        # (the supervisor's and the activator's probes), so nothing that comes through the ingress can pose as
        # one (processes of the same user can still read the token from /proc).
        probe_secret = secrets.token_hex(16)
        tracing, traces, traces_site = await self._tracing()
        tracer = start_tracing(tracing, "router")
        store = Store()
        ports = PortAllocator()
        launcher = OsLauncher()
        forkserver = ForkServer(self.log_dir / "forkserver.log", launcher)
        await forkserver.open()  # imports while the components start, ready before the first pod
        gone = await sweep_installed(opts.state_dir)  # whichever runtime the last run in this folder used
        if gone:
            log.warning("removed %d container(s) a previous run in %s left behind", gone, opts.state_dir)
        supervisor = Supervisor(store, ContainerLauncher(forkserver), QueueProxyProbe(session), ports)
        feed = EventingFeed()
        eventing_token = secrets.token_hex(16)
        platform = web.AppRunner(
            PlatformServer(store, supervisor, feed, eventing_token).app(),
            access_log=None,
            shutdown_timeout=0.5,
        )
        await platform.setup()
        await web.TCPSite(platform, "127.0.0.1", 0).start()
        platform_url = f"http://127.0.0.1:{platform.addresses[0][1]}"
        autoscaler_port, activator_port, activator_admin = ports.allocate_many(3)
        autoscaler, activator = self._components(
            session,
            launcher,
            platform_url,
            (autoscaler_port, activator_port, activator_admin),
            probe_secret,
            tracing,
        )
        ingress_port = sock.getsockname()[1]
        eventing_port, eventing_admin = ports.allocate_many(2)
        eventing = Component(
            "eventing",
            env={
                **os.environ,
                **EventingConfig(
                    bind_address="127.0.0.1",
                    port=eventing_port,
                    admin_port=eventing_admin,
                    data_dir=str(opts.state_dir / EVENTING_DIR),
                    platform_url=platform_url,
                    token=eventing_token,
                    log_format="text",
                ).to_env(),
            },
            ready_url=f"http://127.0.0.1:{eventing_admin}/readyz",
            log_path=self.log_dir / "eventing.log",
            launcher=launcher,
            session=session,
        )
        router = Router(
            store,
            activator_port,
            ingress_port=ingress_port,
            trusted_proxies=opts.trusted_proxies,
            tracer=tracer,
        )
        runtime = LocalRuntime(
            store,
            supervisor,
            LocalSettings(
                log_dir=self.log_dir,
                drain_quiet_period=opts.drain_quiet_period,
                host_env=dict(os.environ),
                probe_secret=probe_secret,
                tracing=tracing,
                runtime_choice=opts.runtime_choice,
                container_runtime=opts.container_runtime,
                state_dir=opts.state_dir,
            ),
        )
        settings = ReconcilerSettings(autoscaler=opts.autoscaler_config)
        sources = ContainerSources(
            launcher,
            self.log_dir,
            os.environ,
            runtime.find_config,
            runtime_choice=opts.runtime_choice,
            container_runtime=lambda: runtime.container_runtime,
            state_dir=opts.state_dir,
            volumes=runtime.volumes,
        )

        def routes_changed(table: RouteTable) -> None:
            router.set_table(table)
            store.set_routed(table.revisions())

        reconciler = Reconciler(runtime, settings, routes_changed)
        gauge = QueueGauge(f"http://127.0.0.1:{activator_admin}/metrics", session)
        report = StatusReport(
            reconciler=reconciler,
            supervisor=supervisor,
            store=store,
            router=router,
            ingress_port=ingress_port,
            queued=gauge.get,
            components=lambda: {
                c.name: _component_json(c)
                for c in (activator, autoscaler, eventing)
                if c is not eventing or self._eventing_task is not None
            },
        )
        view = LiveView(lambda: self._status_document(report), tty=None if self._live else False)
        if traces is not None:
            traces.emit = view.event
        logging.getLogger("controller").addHandler(_ViewHandler(view))
        control = web.AppRunner(control_app(self, self._control_token), access_log=None, shutdown_timeout=0.5)
        await control.setup()
        await web.TCPSite(control, "127.0.0.1", 0).start()
        return _Parts(
            supervisor=supervisor,
            forkserver=forkserver,
            platform=platform,
            platform_url=platform_url,
            control=control,
            components=(autoscaler, activator),
            eventing=eventing,
            eventing_port=eventing_port,
            eventing_admin=eventing_admin,
            feed=feed,
            eventing_view=EventingView(ingress_port, sources.status, broker_port=eventing_port),
            sources=sources,
            session=session,
            router=router,
            reconciler=reconciler,
            runtime=runtime,
            gauge=gauge,
            report=report,
            view=view,
            tracer=tracer,
            traces=traces,
            traces_site=traces_site,
        )

    async def _tracing(self) -> tuple[Tracing, TraceReceiver | None, web.AppRunner | None]:
        """The tracing settings every component gets; with `--trace`, pointing at a receiver started here."""
        opts = self.options
        if not opts.print_traces:
            return opts.tracing, None, None
        traces = TraceReceiver(print)
        site = web.AppRunner(traces.app(), access_log=None, shutdown_timeout=0.5)
        await site.setup()
        await web.TCPSite(site, "127.0.0.1", 0).start()
        endpoint = f"http://127.0.0.1:{site.addresses[0][1]}{TRACES_PATH}"
        interval = min(opts.tracing.export_interval, TRACE_EXPORT_INTERVAL)
        return dataclasses.replace(opts.tracing, endpoint=endpoint, export_interval=interval), traces, site

    async def _start(self, parts: _Parts, manifests: Manifests, sock: socket.socket) -> bool:
        """Components, then Services, then the ingress; False (and a message) if a component fails."""
        opts = self.options
        for component in parts.components:
            await component.start()
        try:
            await asyncio.gather(*(c.wait_ready(opts.ready_timeout) for c in parts.components))
        except ComponentFailed as exc:
            print(f"serving up: {exc}", file=sys.stderr, flush=True)
            return False
        try:
            parts.view.events(await self._converge(parts, lambda d: d.with_files(manifests)))
        except (ServiceFileError, ApplyError) as exc:  # `serving up` checked this before starting
            for problem in exc.problems:
                print(f"serving up: {problem}", file=sys.stderr, flush=True)
            return False
        ingress_port = sock.getsockname()[1]
        router = parts.router
        parts.server = await serve(router.handle, "127.0.0.1", ingress_port, sock=sock, fast=router.fast)
        statefile.write(
            opts.state_dir,
            statefile.UpState(
                pid=os.getpid(),
                control_url=f"http://127.0.0.1:{parts.control.addresses[0][1]}",
                ingress_url=f"http://127.0.0.1:{ingress_port}",
                platform_url=parts.platform_url,
                files=[str(f) for f in opts.files],
                started_at=time.time(),
                control_token=self._control_token,
            ),
        )
        parts.view.header = self._header(ingress_port)
        if not parts.view.tty:
            parts.view.events(parts.view.header)
        return True

    async def _serve_until_stopped(self, parts: _Parts) -> int:
        """Run every long-lived loop until a signal (0) or until one of them fails (1)."""
        autoscaler, activator = parts.components
        parts.tasks = [
            asyncio.create_task(parts.supervisor.run(), name="supervisor"),
            asyncio.create_task(parts.reconciler.run(parts.view.events), name="reconciler"),
            asyncio.create_task(parts.router.run(), name="router"),
            asyncio.create_task(autoscaler.run(), name="autoscaler"),
            asyncio.create_task(activator.run(), name="activator"),
            asyncio.create_task(self._follow_edits(parts), name="edits"),
            asyncio.create_task(self._refresh(parts.view, parts.report, parts.gauge), name="view"),
        ]
        if parts.traces is not None:
            parts.tasks.append(asyncio.create_task(parts.traces.run(), name="traces"))
        parts.tasks.append(asyncio.create_task(self._eventing_failure(), name="eventing"))
        stopped = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait([stopped, *parts.tasks], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        failed = [t for t in done if t is not stopped]
        for task in failed:
            error = task.exception()
            print(f"serving up: {task.get_name()} failed: {error!r}", file=sys.stderr, flush=True)
        return 1 if failed else 0

    async def _teardown(self, parts: _Parts) -> None:
        """Stop accepting, stop the loops, drain and stop pods and components, then the in-process APIs."""
        view = parts.view
        view.close()
        view.event("stopping: draining pods and stopping components")
        grace = 0.0 if self._signals > 1 else self.options.shutdown_grace
        if self._eventing_task is not None:
            # First, while every subscriber is still reachable: a Trigger stopped by a closed ingress would
            # see its deliveries refused and spend their retries (dropping them); stopped first, it leaves
            # them in its log for the next start.
            self._eventing_task.cancel()
            await asyncio.gather(self._eventing_task, return_exceptions=True)
            await parts.eventing.stop(min(grace, EVENTING_GRACE))
        if parts.server is not None:
            parts.server.close()
        for task in parts.tasks:
            task.cancel()
        await asyncio.gather(*parts.tasks, return_exceptions=True)
        await asyncio.gather(
            parts.supervisor.shutdown(grace),
            *(c.stop(grace) for c in parts.components),
            return_exceptions=True,
        )
        await parts.sources.close()
        await parts.forkserver.close()
        if parts.runtime.container_runtime is not None:  # a client killed at the deadline left its container
            await sweep(parts.runtime.container_runtime, self.options.state_dir)
        if parts.server is not None:
            with contextlib.suppress(Exception):
                await parts.server.drain(0.5)
        await parts.router.close()
        if parts.tracer is not None:
            await asyncio.to_thread(parts.tracer.close)
        if parts.traces is not None and parts.traces_site is not None:
            parts.traces.flush(everything=True)  # the components have exported what they had: they stopped
            await parts.traces_site.cleanup()
        await parts.control.cleanup()
        await parts.platform.cleanup()
        statefile.remove(self.options.state_dir, os.getpid())
        view.event("stopped")

    def _components(
        self,
        session: aiohttp.ClientSession,
        launcher: OsLauncher,
        platform_url: str,
        ports: tuple[int, int, int],
        probe_secret: str,
        tracing: Tracing,
    ) -> tuple[Component, Component]:
        """The autoscaler and the activator; `ports`: the autoscaler's, the activator's and its admin port."""
        opts = self.options
        autoscaler_port, activator_port, activator_admin = ports
        base = dict(os.environ)
        autoscaler = Component(
            "autoscaler",
            env={
                **base,
                **AutoscalerSettings(
                    bind_address="127.0.0.1",
                    port=autoscaler_port,
                    platform_url=platform_url,
                    activator_url=f"http://127.0.0.1:{activator_port}",
                    config=opts.autoscaler_config,
                    log_format="text",
                ).to_env(),
            },
            ready_url=f"http://127.0.0.1:{autoscaler_port}/healthz",
            log_path=self.log_dir / "autoscaler.log",
            launcher=launcher,
            session=session,
        )
        activator = Component(
            "activator",
            env={
                **base,
                **ActivatorConfig(
                    bind_address="127.0.0.1",
                    port=activator_port,
                    admin_port=activator_admin,
                    platform_url=platform_url,
                    autoscaler_url=f"ws://127.0.0.1:{autoscaler_port}/",
                    drain_timeout=opts.activator_drain,
                    autoscaler_config=opts.autoscaler_config,
                    probe_secret=probe_secret,
                    pod_name="activator",
                    log_format="text",
                    tracing=tracing,
                ).to_env(),
            },
            ready_url=f"http://127.0.0.1:{activator_admin}/readyz",
            log_path=self.log_dir / "activator.log",
            launcher=launcher,
            session=session,
        )
        return autoscaler, activator

    async def _eventing_failure(self) -> None:
        """Returns only if the eventing component's supervision loop fails (it restarts the process)."""
        await self._eventing_started.wait()
        assert self._eventing_task is not None
        await self._eventing_task

    def _status_document(self, report: StatusReport) -> JSON:
        document = report.build()
        if self._parts is not None:
            document["eventing"] = self._parts.eventing_view.json()
        return document

    def _header(self, port: int) -> list[str]:
        return [
            f"serving up: ingress on http://127.0.0.1:{port}, state and logs in {self.options.state_dir}",
            "Ctrl-C stops everything; `serving status` and `serving logs SERVICE` work from this folder.",
        ]

    async def _ensure_runtime(
        self, runtime: LocalRuntime, services: Sequence[Service], events: Sequence[EventObject]
    ) -> None:
        """Find a container runtime when a change first brings a Service or a ContainerSource that needs one;
        raises `ServiceFileError` naming them when none works."""
        needing = needing_runtime(services, self.options.runtime_choice)
        waiting: list[Service | ContainerSource] = [
            *needing,
            *sources_needing_runtime(events, self.options.runtime_choice),
        ]
        if runtime.container_runtime is not None:
            problems = pod_problems(needing, runtime.container_runtime)
            if problems:
                raise ServiceFileError(problems)
        if not waiting or runtime.container_runtime is not None:
            return
        try:
            found = await detect(self.options.runtime_choice)
        except RuntimeUnavailable as exc:
            raise ServiceFileError([runtime_problem(o, exc) for o in waiting]) from None
        problems = pod_problems(needing, found)
        if problems:
            raise ServiceFileError(problems)
        runtime.container_runtime = found  # leftovers of earlier runs were swept at start (`sweep_installed`)

    async def _converge(self, parts: _Parts, change: Callable[[Desired], Desired]) -> list[str]:
        """Make `change(current desired state)` what runs; returns what changed, one line each. The change is
        computed under the lock, so that concurrent edits and applies each see the others' result. Raises
        `ServiceFileError`, `ApplyError`, `NotFound` or `Conflict` (changing nothing) when it cannot run: an
        object defined twice, a rule of the reconciler, no container runtime for a Service that needs one."""
        async with self._changing:
            desired = change(self._desired)
            problems = desired.problems()
            if problems:
                raise ServiceFileError(problems)
            merged = desired.merged()
            await self._ensure_runtime(parts.runtime, merged.services, merged.events)
            changes = parts.reconciler.apply(merged.services)  # checks everything before changing anything
            changes += parts.runtime.set_configs(merged.configs)  # pods read them when they start, after this
            self._desired = desired
            resolved, container_sources = resolve_local(
                merged.events, merged.services, merged.configs, parts.eventing_view.port, parts.eventing_port
            )
            parts.eventing_view.set(merged.events, resolved)
            await parts.feed.set(resolved.spec)
            changes += parts.runtime.set_bindings(resolved.bindings)
            changes += await parts.sources.set(container_sources)
            if merged.events:
                await self._ensure_eventing(parts)
            return changes

    async def _ensure_eventing(self, parts: _Parts) -> None:
        """Start the eventing component with the first Eventing object, and send the Broker and webhook
        Hosts to it; a start that fails is retried by its supervision loop."""
        if parts.eventing.pid is not None or self._eventing_task is not None:
            return
        await parts.eventing.start()
        address = ("127.0.0.1", parts.eventing_port)
        parts.router.set_platform_hosts({BROKER_HOST: address, WEBHOOK_HOST: address})
        self._eventing_task = asyncio.create_task(parts.eventing.run(), name="eventing")
        self._eventing_started.set()
        try:
            await parts.eventing.wait_ready(self.options.ready_timeout)
        except ComponentFailed as exc:
            log.error("%s", exc)
            parts.view.event(f"eventing is not ready yet: {exc}")

    # --- the control API (controller.local.controlserver.Control) ------------------------------------------

    def _running(self) -> _Parts:
        if self._parts is None:
            raise ConnectionRefusedError("serving up is starting")
        return self._parts

    def status(self) -> JSON:
        return self._status_document(self._running().report)

    async def apply(self, texts: list[tuple[Path, str]]) -> list[str]:
        parts = self._running()
        opts = self.options
        checks = (partial(local_service_problems, runtime_choice=opts.runtime_choice),)
        event_checks = (partial(local_event_object_problems, runtime_choice=opts.runtime_choice),)
        incoming = await _in_thread(
            lambda: parse_manifests(
                texts, config=opts.autoscaler_config, checks=checks, event_checks=event_checks
            )
        )

        def change(desired: Desired) -> Desired:
            for obj in objects(incoming):
                defined = desired.file_defining(key_of(obj))
                if defined is not None:
                    where = f"{obj.where}: metadata.name"
                    raise ServiceFileError(
                        [f"{where}: defined in {defined.source}, which `serving up` runs: edit that file"]
                    )
            return desired.with_applied(incoming)

        changes = await self._converge(parts, change)
        parts.view.events(changes or ["apply: nothing changed"])
        return changes

    async def delete(self, key: ObjectKey) -> list[str]:
        parts = self._running()
        kind, namespace, name = key

        def change(desired: Desired) -> Desired:
            defined = desired.file_defining(key)
            if defined is not None:
                raise Conflict(
                    f"{kind} {namespace}/{name} is defined in {defined.source}, which `serving up` runs: "
                    "remove it from that file"
                )
            remaining = desired.without(key)
            if remaining is None:
                raise NotFound(f"{kind} {namespace}/{name} not found")
            return remaining

        changes = await self._converge(parts, change)
        parts.view.events(changes)
        return changes

    def describe(self, key: ObjectKey) -> JSON:
        parts = self._running()
        kind, namespace, name = key
        obj = self._desired.find(key)
        if obj is None:
            raise NotFound(f"{kind} {namespace}/{name} not found")
        origin = "file" if self._desired.file_defining(key) is not None else "applied"
        words = (f"{namespace}/{name} ", f"{namespace}/{name}-", f"{namespace}/{name}:", f"pod {name}-")
        events = parts.view.recent(words)
        if isinstance(obj, Service):
            return describe_service(obj, origin, parts.report.service(namespace, name), events)
        if isinstance(obj, ConfigData):
            return describe_config(obj, origin, events)
        return describe_event(obj, origin, parts.eventing_view.entry(obj.kind, namespace, name), events)

    async def _follow_edits(self, parts: _Parts) -> None:
        """Apply each edit of the files; one that cannot be read, validated or applied changes nothing."""
        watcher = self._watcher
        opts = self.options
        view = parts.view
        while True:
            await asyncio.sleep(opts.poll_interval)
            if not watcher.changed():
                continue
            try:
                # Off the loop: a file at the size limit takes seconds to parse, requests keep flowing.
                manifests = await _in_thread(
                    lambda: load_local(opts.files, opts.autoscaler_config, opts.runtime_choice)
                )
                changes = await self._converge(parts, partial(Desired.with_files, files=manifests))
            except (ServiceFileError, ApplyError) as exc:
                view.event("edit rejected, still running the previous version:")
                for problem in exc.problems:
                    view.event(f"  {problem}")
                continue
            except Exception as exc:  # task boundary: no edit may stop the Services that run
                log.exception("applying an edit of %s failed", ", ".join(map(str, opts.files)))
                view.event(f"edit rejected, still running the previous version: {exc!r} (see controller.log)")
                continue
            for line in changes or ["files changed: nothing to apply"]:
                view.event(line)

    async def _refresh(self, view: LiveView, report: StatusReport, gauge: QueueGauge) -> None:
        parts = self._running()
        while True:
            if parts.eventing.pid is not None:
                url = f"http://127.0.0.1:{parts.eventing_admin}/status"
                await parts.eventing_view.scrape(parts.session, url)
            await gauge.scrape()
            report.sample()
            view.refresh()
            await asyncio.sleep(1.0)


async def _in_thread(load: Callable[[], T]) -> T:
    """`load()` in a daemon thread: unlike `asyncio.to_thread`'s pool, which is joined when the loop closes,
    a parse still running at Ctrl-C does not hold up the exit."""
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def work() -> None:
        if not done.set_running_or_notify_cancel():
            return
        try:
            done.set_result(load())
        except Exception as exc:  # handed to the awaiting task, which reports it
            done.set_exception(exc)

    threading.Thread(target=work, name="load-edits", daemon=True).start()
    return await asyncio.wrap_future(done)


def _component_json(component: Component) -> JSON:
    return {
        "pid": component.pid,
        "restarts": component.restarts,
        "last_exit": component.last_exit,
        "log": str(component.log_path),
        "ready_url": component.ready_url,
    }


def reset_logs(state_dir: Path) -> None:
    """Logs of the previous run are removed when `serving up` starts (each run starts a fresh log tree)."""
    shutil.rmtree(state_dir / statefile.LOG_DIR, ignore_errors=True)
