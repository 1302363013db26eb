"""The optional request log: one JSON line per proxied request on stderr (`REQUEST_LOG=true`).

When it is off the handler holds None and pays a single `is None` test per request.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO


class RequestLog:
    __slots__ = ("_identity", "_stream")

    def __init__(self, revision: str, pod: str, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._identity = {"revision": revision, "pod": pod}

    def write(
        self,
        *,
        method: str,
        target: str,
        status: int,
        seconds: float,
        client: str,
        user_agent: str,
        proxied: bool,
    ) -> None:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "method": method,
            "target": target,
            "status": status,
            "latency_seconds": round(seconds, 6),
            "client": client,
            "user_agent": user_agent,
            "proxied": proxied,
            **self._identity,
        }
        self._stream.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._stream.flush()
