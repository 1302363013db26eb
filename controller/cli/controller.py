"""`serving controller FILE...`: the local platform without the live view (plain log lines), for scripts;
`serving controller --kubernetes`: the controller of a cluster (`controller.kube`).
"""

from __future__ import annotations

from controller.cli.up import parser, run


def main(argv: list[str]) -> int:
    if argv[:1] == ["--kubernetes"]:
        from controller.kube.main import main as kube_main

        return kube_main(argv[1:])
    p = parser("serving controller", live_flag=False)
    p.description = (
        "Run Knative Services from YAML files on this machine, printing log lines (no live table). "
        "`serving controller --kubernetes` runs the controller of a cluster instead (configured by "
        "environment variables; see charts/serving)."
    )
    args = p.parse_args(argv)
    return run(args, live=False)
