"""Build hook: the modules every proxied request runs through are compiled to C extensions with mypyc.

They are ordinary, strictly typed Python; compiled, the forwarding engine and the queue-proxy's handler do
about a third less work per request. One small C module (`NATIVE`) does what a mypyc loop still does byte by
byte. Set SERVING_PURE_PYTHON=1 (or build where there is no C compiler) to install them as plain Python:
behaviour is the same, only slower. Everything else is configured in pyproject.toml.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

from setuptools import setup

# The per-request path: the HTTP engine, the queue-proxy's handler, the ingress router, the eventing
# component's per-event path (its ingress, CloudEvents reading, delivery client and Trigger dispatcher) and
# what they call on every request. A compiled module must not subclass a class of a third-party library: the
# build environment has none of their types, and mypyc cannot lay out a native class over an unknown base
# (queueproxy/metrics.py and eventing/session.py stay interpreted for that reason), nor over most built-in
# types (OSError among them).
COMPILED = [
    "serving/http/connection.py",
    "serving/http/error.py",
    "serving/http/exchange.py",
    "serving/http/framing.py",
    "serving/http/message.py",
    "serving/http/pool.py",
    "serving/http/relay.py",
    "serving/http/state.py",
    "serving/http/upstream.py",
    "serving/http/wire.py",
    "serving/breaker.py",
    "serving/concurrency.py",
    "serving/header.py",
    "serving/tally.py",
    "queueproxy/handler.py",
    "queueproxy/inflight.py",
    "queueproxy/rewrite.py",
    "controller/ingress/router.py",
    "eventing/cloudevent.py",
    "eventing/client.py",
    "eventing/delivery.py",
    "eventing/dispatcher.py",
    "eventing/ingress.py",
]

# Hand-written C beside them, for what a loop compiled by mypyc still does per byte: source -> module.
NATIVE = {"serving/http/_head.c": "serving.http._head"}


def can_compile() -> bool:
    """Whether this build compiles: not turned off, and a C compiler and the Python headers are there."""
    if os.environ.get("SERVING_PURE_PYTHON", "") not in ("", "0"):
        return False
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    return shutil.which(compiler) is not None and os.path.exists(headers)


def remove_extensions(root: Path) -> list[Path]:
    """Delete the extension modules an earlier compiled build left beside the sources (and their shared
    library): an extension shadows the .py beside it, so after a pure build it would keep running the old
    code, or fail to import once its shared library is gone. Returns what was removed."""
    stale = [p for path in [*COMPILED, *NATIVE] for p in (root / path).parent.glob(f"{Path(path).stem}.*.so")]
    stale += root.glob("*__mypyc.*.so")
    for extension in stale:
        extension.unlink()
    return stale


def _extensions() -> list[object]:
    if not can_compile():
        remove_extensions(Path(__file__).resolve().parent)
        return []
    from mypyc.build import mypycify
    from setuptools import Extension

    # The build environment has only the build requirements: the runtime libraries' types are not needed to
    # compile (values from them are handled as Python objects), and the strict checking is CI's business.
    options = ["--config-file=", "--ignore-missing-imports", "--follow-imports=silent"]
    native = [Extension(module, [source], extra_compile_args=["-O3"]) for source, module in NATIVE.items()]
    return [*mypycify([*options, *COMPILED], opt_level="3"), *native]


if __name__ == "__main__":
    setup(ext_modules=_extensions())
