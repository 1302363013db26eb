"""`serving controller FILE...`: the local platform without the live view (plain log lines), for scripts.

It runs exactly what `serving up` runs. A controller that reconciles Services inside a Kubernetes cluster is
not available yet; on Kubernetes, the components run from the Helm chart.
"""

from __future__ import annotations

from controller.up import launch, parser, prepare


def main(argv: list[str]) -> int:
    p = parser("serving controller", live_flag=False)
    p.description = (
        "Run Knative Services from YAML files on this machine, printing log lines (no live table). "
        "Kubernetes mode is not available yet."
    )
    args = p.parse_args(argv)
    prepared = prepare(args)
    if isinstance(prepared, int):
        return prepared
    return launch(prepared, live=False, log_level=args.log_level)
