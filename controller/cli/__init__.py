"""The `serving` command line: one subcommand per component or tool, each importing its module lazily.

Lazy imports keep `serving queue-proxy` from loading the autoscaler's or controller's dependencies.
"""

from __future__ import annotations

import importlib
import sys
from typing import Final, Protocol

# subcommand -> (module, one-line help). Each module exposes `main(argv: list[str]) -> int`.
COMMANDS: Final = {
    "up": ("controller.cli.up", "run Services from Knative YAML files on this machine"),
    "status": ("controller.cli.status", "show the state of a running `serving up`"),
    "apply": (
        "controller.cli.apply",
        "create or update Services, ConfigMaps and Secrets in `serving up`",
    ),
    "delete": ("controller.cli.delete", "delete what `serving apply` created"),
    "list": ("controller.cli.listing", "list the Services or revisions of a running `serving up`"),
    "describe": ("controller.cli.describe", "show one Service, ConfigMap or Secret in detail"),
    "logs": ("controller.cli.logs", "print or follow the logs of a Service's pods"),
    "controller": ("controller.cli.controller", "run the controller alone (`--kubernetes`: in a cluster)"),
    "router": ("controller.kube.ingress", "run the cluster ingress router (Kubernetes)"),
    "queue-proxy": (
        "queueproxy.main",
        "run the queue-proxy sidecar (Knative environment variables)",
    ),
    "activator": ("activator.main", "run the activator"),
    "autoscaler": ("autoscaler.main", "run the autoscaler"),
    "eventing": ("eventing.main", "run the Broker ingress, Trigger delivery and event sources"),
    "simulate": ("autoscaler.simulate", "replay a traffic trace through the KPA decider"),
    "bench": ("bench.command", "run a data-plane benchmark scenario"),
}


class _Entry(Protocol):
    def __call__(self, argv: list[str]) -> int: ...


def usage() -> str:
    lines = ["usage: serving COMMAND [ARGS...]", "", "commands:"]
    width = max(map(len, COMMANDS))
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"serving: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    entry: _Entry = module.main
    return entry(rest)


if __name__ == "__main__":
    sys.exit(main())
