"""One benchmark request's record, its on-disk form (gzip-compressed JSON lines) and `Server-Timing`
parsing."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

ACTIVATOR_METRIC: Final = "activator"

# Error kinds recorded on samples that got no HTTP response.
CONNECT: Final = "connect"
TIMEOUT: Final = "timeout"
RESET: Final = "reset"
PROTOCOL: Final = "protocol"
CLIENT_CAP: Final = "client-cap"


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """Times are seconds from the run's start (offset 0 of the schedule); latency runs from the scheduled send
    time, so it includes any delay of the sender itself."""

    target: str
    """Name of the target (path through the system, or service) the request went to."""
    scheduled: float
    """Scheduled send time, seconds after the run's start."""
    send_lag: float
    """Actual minus scheduled send time: how far the generator fell behind (seconds)."""
    latency: float
    """Scheduled send time (or the actual one when it was earlier, within the timer slack) to the end of
    the response or the error, seconds."""
    status: int
    """HTTP status, 0 when no response came (see `error`)."""
    error: str | None = None
    """Why no response came: connect, timeout, reset, protocol or client-cap."""
    activator_ms: float | None = None
    """Time the request waited in the activator, from `Server-Timing: activator;dur=<ms>`; None if absent."""
    revision: str | None = None
    """The revision that answered, when the app says so (`X-Bench-Revision`)."""
    nbytes: int = 0
    """Response body size."""

    @property
    def ok(self) -> bool:
        """A response in 200-399: what Knative's benchmarks count as a success."""
        return 200 <= self.status < 400

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sample:
        return cls(
            target=str(data["target"]),
            scheduled=float(data["scheduled"]),
            send_lag=float(data["send_lag"]),
            latency=float(data["latency"]),
            status=int(data["status"]),
            error=data.get("error"),
            activator_ms=None if data.get("activator_ms") is None else float(data["activator_ms"]),
            revision=data.get("revision"),
            nbytes=int(data.get("nbytes", 0)),
        )


def parse_server_timing(value: str) -> float | None:
    """The `dur` (ms) of the `activator` metric in a Server-Timing header value, or None if absent.

    The header is a comma-separated list of `name;param=value;...` (W3C Server Timing); an `activator` metric
    without a usable `dur` counts as a wait of unknown length, reported as 0.
    """
    for entry in value.split(","):
        parts = entry.split(";")
        if parts[0].strip().lower() != ACTIVATOR_METRIC:
            continue
        for param in parts[1:]:
            key, _, raw = param.partition("=")
            if key.strip().lower() == "dur":
                try:
                    dur = float(raw.strip().strip('"'))
                except ValueError:
                    return 0.0
                return dur if dur >= 0 else 0.0
        return 0.0
    return None


def write_samples(path: Path, samples: Iterable[Sample]) -> int:
    """Write samples as gzip-compressed JSON lines; returns how many were written."""
    count = 0
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for sample in samples:
            out.write(json.dumps(sample.to_json(), separators=(",", ":")) + "\n")
            count += 1
    return count


def read_samples(path: Path) -> list[Sample]:
    with gzip.open(path, "rt", encoding="utf-8") as src:
        return [Sample.from_json(json.loads(line)) for line in src if line.strip()]
