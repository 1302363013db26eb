"""`serving describe KIND NAME`: one Service (URL, template, traffic, conditions, revisions with their pods,
recent events), ConfigMap or Secret (keys and sizes; a Secret's values are never shown) of the running
`serving up`, in the manner of `kn service describe`."""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml

from controller.cli.control import ControlError, add_state_dir, fail, request
from controller.cli.listing import table
from controller.local.desired import kind_named

PROG = "serving describe"


def _service_lines(doc: dict[str, Any]) -> list[str]:
    lines = [
        f"Name:       {doc['name']}",
        f"Namespace:  {doc['namespace']}",
        f"URL:        {doc['url']}",
        f"Source:     {doc['source']} ({doc['origin']})",
        "",
        "Template:",
        *("  " + line for line in yaml.safe_dump(doc["template"], sort_keys=False).rstrip().splitlines()),
        "",
        "Traffic:",
    ]
    for t in doc["traffic"]:
        target = t["revisionName"] or "@latest"
        tag = f"  #{t['tag']}" if t["tag"] else ""
        lines.append(f"  {t['percent'] or 0:>3}%  {target}{tag}")
    lines += ["", "Revisions:"]
    rows = [["NAME", "TRAFFIC", "PODS", "READY", "REASON"]]
    for r in doc["revisions"]:
        pods = f"{r['ready_pods']}/{r['desired_pods']}"
        rows.append(
            [
                r["name"],
                f"{r['traffic_percent']}%",
                pods,
                "True" if r["ready"] else "False",
                r["reason"] or "",
            ]
        )
    lines += ["  " + row for row in table(rows)]
    lines += ["", "Conditions:"]
    rows = [["TYPE", "STATUS", "REASON"]]
    rows += [[c["type"], c["status"], c["reason"] or ""] for c in doc["conditions"]]
    lines += ["  " + row for row in table(rows)]
    return lines


def _config_lines(doc: dict[str, Any]) -> list[str]:
    lines = [
        f"Name:       {doc['name']}",
        f"Namespace:  {doc['namespace']}",
        f"Kind:       {doc['kind']}" + (f" ({doc['type']})" if doc["type"] else ""),
        f"Source:     {doc['source']} ({doc['origin']})",
        f"Immutable:  {doc['immutable']}",
        "",
        "Data:" if doc["kind"] == "ConfigMap" else "Data (values not shown):",
    ]
    lines += [f"  {key}: {size} bytes" for key, size in doc["keys"].items()] or ["  (none)"]
    return lines


def _event_lines(doc: dict[str, Any]) -> list[str]:
    lines = [
        f"Name:       {doc['name']}",
        f"Namespace:  {doc['namespace']}",
        f"Kind:       {doc['kind']}",
        f"Source:     {doc['source']} ({doc['origin']})",
        "",
        "Status:",
    ]
    lines += [f"  {key}: {value}" for key, value in doc["status"].items() if value not in (None, "")]
    lines += ["", "Conditions:"]
    rows = [["TYPE", "STATUS", "REASON"]]
    rows += [[c["type"], c["status"], c["reason"] or ""] for c in doc["conditions"]]
    lines += ["  " + row for row in table(rows)]
    return lines


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=PROG, description="Show one object of a running `serving up` in detail.")
    p.add_argument("kind", help="service (ksvc), configmap (cm), secret, broker, trigger or a source kind")
    p.add_argument("name")
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    p.add_argument("--json", action="store_true", help="print the document as JSON")
    add_state_dir(p)
    args = p.parse_args(argv)
    kind = kind_named(args.kind)
    if kind is None:
        p.error(
            f"unknown kind {args.kind!r}: use service, configmap, secret, broker, trigger or a source kind"
        )
    try:
        doc = request(args.state_dir, "GET", f"/v1/{kind.lower()}/{args.namespace}/{args.name}")
    except ControlError as exc:
        return fail(PROG, exc)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    if doc["kind"] == "Service":
        lines = _service_lines(doc)
    elif doc["kind"] in ("ConfigMap", "Secret"):
        lines = _config_lines(doc)
    else:
        lines = _event_lines(doc)
    lines += ["", "Events:", *("  " + e for e in doc["events"])] if doc["events"] else ["", "Events: none"]
    print("\n".join(lines))
    return 0
