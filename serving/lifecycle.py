"""One lifecycle for the component processes (queue-proxy, activator, autoscaler): arguments, environment,
logging, signals, the garbage collector's settings, the long-lived tasks and the exit code, so that each
component's `main` only wires.

The caller chooses the event loop: entry points pass `uvloop.new_event_loop`, and only they import uvloop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Final, Protocol, TypeVar

from serving import logformat
from serving.config import ConfigError
from serving.process import termination_event

C = TypeVar("C")

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
"""A root task failed (a port in use, a crash): the process stops with a one-line reason."""
EXIT_INVALID_ENVIRONMENT: Final = 1
"""The environment does not load; every problem is printed. 1, as the components have always exited."""
EXIT_USAGE: Final = 2
"""Unexpected command-line arguments: the components are configured by environment variables only."""

YOUNG_COLLECTION: Final = 20_000
"""Net allocations of container objects between two collections of the cyclic collector's youngest
generation (CPython's default: 700). A busy component has thousands of objects in flight (a request's
coroutines, futures, headers); at 700, each collection walks them, promotes the live ones, and the older
generations walk them again: under 100 producers the eventing component spent about 13% of its CPU in the
collector (sampled with perf), 4% with this setting. 20,000 is a few MB of cyclic garbage at most between
collections."""

logger = logging.getLogger(__name__)


def settle_collector() -> None:
    """Keep the cyclic garbage collector off the request path: what exists when a component starts (its
    modules, classes, configuration) leaves the collector's generations for good (`gc.freeze`), so a full
    collection walks only what the component made since, and the young generation is collected every
    `YOUNG_COLLECTION` allocations. Called once per process, before its loop starts."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION, middle, old)


class LogChoice(Protocol):
    """The two logging settings every component's config carries (`LOG_FORMAT`, `LOG_LEVEL`)."""

    @property
    def log_format(self) -> str: ...

    @property
    def log_level(self) -> str: ...


Main = Callable[[C, asyncio.Event], Coroutine[Any, Any, None]]
"""A component's root coroutine: its config and the event the first SIGTERM/SIGINT sets."""


def reason(error: BaseException) -> str:
    """One line saying why a root task failed; the errors of a task group are joined with `; `."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(reason(inner) for inner in error.exceptions)
    text = " ".join(str(error).split())
    if isinstance(error, OSError):
        return text or type(error).__name__  # already says which server and port (`cannot listen on ...`)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def supervise(
    terminating: asyncio.Event,
    background: Iterable[Coroutine[Any, Any, None]],
    shutdown: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run `background` in one task group until `terminating` is set, await `shutdown()` (the component's
    drain, in its own order), then cancel the background tasks and return.

    A background task that fails ends the group at once: the others are cancelled and the failure propagates
    (a failed root task). `shutdown` runs while the background tasks still run, so a drain can rely on them.
    """
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(coroutine) for coroutine in background]

        async def stop() -> None:
            await terminating.wait()
            if shutdown is not None:
                await shutdown()
            for task in tasks:
                task.cancel()

        group.create_task(stop())


def usage_exit(name: str, argv: Sequence[str], usage: str) -> int | None:
    """None when there are no arguments; else print `usage` (stdout for `-h`/`--help`, exit 0; stderr
    otherwise, exit 2)."""
    if not argv:
        return None
    if argv[0] in ("-h", "--help"):
        print(usage)
        return EXIT_OK
    print(f"serving {name}: unexpected arguments {' '.join(argv)!r}\n{usage}", file=sys.stderr)
    return EXIT_USAGE


def load_or_report(name: str, load: Callable[[Mapping[str, str]], C], environ: Mapping[str, str]) -> C | None:
    """The component's config, or None after printing `serving NAME: invalid environment:` and every
    problem, one per line, on stderr."""
    try:
        return load(environ)
    except ConfigError as exc:
        print(f"serving {name}: {exc}", file=sys.stderr)
        return None


def run_component(
    name: str,
    argv: Sequence[str],
    *,
    usage: str,
    load: Callable[[Mapping[str, str]], C],
    log: Callable[[C], LogChoice],
    main: Main[C],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run one component process to its end and return its exit code.

    Arguments are refused (`EXIT_USAGE`); the environment is loaded, or every problem printed
    (`EXIT_INVALID_ENVIRONMENT`); logging is configured from the config; then `main(config, terminating)`
    runs on a new loop from `loop_factory`, with SIGTERM/SIGINT setting `terminating`. A clean return is
    `EXIT_OK`; an exception out of `main` (a failed root task) is logged as one line, `EXIT_FAILED`.
    """
    early = usage_exit(name, argv, usage)
    if early is not None:
        return early
    config = load_or_report(name, load, os.environ if environ is None else environ)
    if config is None:
        return EXIT_INVALID_ENVIRONMENT
    choice = log(config)
    logformat.configure(choice.log_format, choice.log_level)

    async def root() -> None:
        await main(config, termination_event())

    settle_collector()
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(root())
    except Exception as exc:  # the process boundary: one line, non-zero exit
        logger.debug("%s: traceback of the failure", name, exc_info=exc)
        logger.error("%s stopped: %s", name, reason(exc))
        return EXIT_FAILED
    return EXIT_OK
