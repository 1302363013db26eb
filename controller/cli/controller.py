"""`serving controller FILE...`: the local platform without the live view (plain log lines), for scripts.

It runs exactly what `serving up` runs. There is no Kubernetes mode yet: no in-cluster controller and no
Helm chart.
"""

from __future__ import annotations

from controller.cli.up import parser, run


def main(argv: list[str]) -> int:
    p = parser("serving controller", live_flag=False)
    p.description = (
        "Run Knative Services from YAML files on this machine, printing log lines (no live table). "
        "Kubernetes mode is not available yet."
    )
    args = p.parse_args(argv)
    return run(args, live=False)
