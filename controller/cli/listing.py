"""`serving list [services|revisions]`: the Services (URL, latest revision, ready) or revisions (Service,
traffic, pods, ready) of the running `serving up`, as tables in the manner of `kn service list` and
`kn revision list`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from controller.cli.control import ControlError, add_state_dir, fail, request

PROG = "serving list"


def table(rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def service_rows(status: dict[str, Any]) -> list[list[str]]:
    rows = [["NAMESPACE", "NAME", "URL", "LATEST", "READY"]]
    for s in status["services"]:
        ready = (
            s["latest_ready_revision"] is not None
            and s["latest_ready_revision"] == s["latest_created_revision"]
        )
        rows.append(
            [
                s["namespace"],
                s["name"],
                s["url"],
                s["latest_created_revision"] or "",
                "True" if ready else "False",
            ]
        )
    return rows


def revision_rows(status: dict[str, Any]) -> list[list[str]]:
    rows = [["NAMESPACE", "NAME", "SERVICE", "TRAFFIC", "TAGS", "PODS", "READY", "REASON"]]
    for s in status["services"]:
        for r in s["revisions"]:
            pods = f"{r['ready_pods']}/{r['desired_pods']}"
            rows.append(
                [
                    s["namespace"],
                    r["name"],
                    s["name"],
                    f"{r['traffic_percent']}%",
                    ",".join(r["tags"]),
                    pods,
                    "True" if r["ready"] else "False",
                    r["reason"] or "",
                ]
            )
    return rows


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog=PROG, description="List the Services or revisions of a running `serving up`."
    )
    p.add_argument("what", nargs="?", default="services", choices=("services", "revisions"))
    p.add_argument("--json", action="store_true", help="print the status document's services as JSON")
    add_state_dir(p)
    args = p.parse_args(argv)
    try:
        status = request(args.state_dir, "GET", "/status")
    except ControlError as exc:
        return fail(PROG, exc)
    if args.json:
        print(json.dumps(status["services"], indent=2))
        return 0
    rows = service_rows(status) if args.what == "services" else revision_rows(status)
    if len(rows) == 1:
        print(f"No {args.what} found.")
        return 0
    print("\n".join(table(rows)))
    return 0
