"""The readiness probe the queue-proxy runs against the app: its spec and parser are part of the
queue-proxy's contract (`serving.contract.probe`), re-exported here for the queue-proxy's modules.
"""

from __future__ import annotations

from serving.contract.probe import ProbeSpec, format_probe, parse_probe

__all__ = ["ProbeSpec", "format_probe", "parse_probe"]
