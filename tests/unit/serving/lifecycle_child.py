"""A component that does nothing but follow `serving.lifecycle`, run as a real process by test_lifecycle.py.

`CHILD_MODE` picks what its root coroutine does: `wait` runs until SIGTERM/SIGINT and drains, `fail` has a
background task raise, `listen` fails before its tasks start as a busy port would, `collector` prints how the
cyclic garbage collector is set up (young threshold, objects frozen) and returns.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from dataclasses import dataclass
from typing import Literal

from serving import lifecycle
from serving.config import load, parse_log_format, parse_port, parse_str, setting


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildConfig:
    mode: str = setting("CHILD_MODE", parse_str, required=True)
    port: int = setting("CHILD_PORT", parse_port, required=True)
    log_format: Literal["text", "json"] = setting("LOG_FORMAT", parse_log_format, "text")
    log_level: str = "INFO"


async def forever() -> None:
    await asyncio.Event().wait()


async def fail() -> None:
    await asyncio.sleep(0)
    raise RuntimeError("the stat link broke\nat once")


async def drain() -> None:
    print("draining", flush=True)
    await asyncio.sleep(0.01)
    print("drained", flush=True)


async def run(config: ChildConfig, terminating: asyncio.Event) -> None:
    if config.mode == "collector":
        print(gc.get_threshold()[0], gc.get_freeze_count(), flush=True)
        return
    if config.mode == "listen":
        raise OSError(98, f"main server cannot listen on port {config.port}: Address already in use")
    background = [forever(), fail()] if config.mode == "fail" else [forever()]
    print("ready", flush=True)
    await lifecycle.supervise(terminating, background, drain)


def main(argv: list[str]) -> int:
    return lifecycle.run_component(
        "child",
        argv,
        usage="usage: child  (configured by environment variables)",
        load=lambda environ: load(ChildConfig, environ),
        log=lambda config: config,
        main=run,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
