"""Process-level wiring shared by the component entry points: how SIGTERM/SIGINT reach the running loop.

Only a component's `main` module uses this; library code never installs signal handlers.
"""

from __future__ import annotations

import asyncio
import signal


def termination_event() -> asyncio.Event:
    """An event set by the first SIGTERM or SIGINT; the caller's lifecycle task waits on it to start draining.

    Must be called from inside the running loop: the handlers are installed on it, so a signal never
    interrupts a callback mid-way (Kubernetes sends SIGTERM when a pod is deleted).
    """
    terminating = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, terminating.set)
    return terminating
