"""`serving delete KIND NAME...`: delete Services (`service`/`ksvc`), ConfigMaps or Secrets that
`serving apply` created in the running `serving up`, as `kn service delete` or `kubectl delete` does.
Objects that one of `serving up`'s own files defines are deleted by editing that file instead."""

from __future__ import annotations

import argparse

from controller.cli.control import ControlError, add_state_dir, fail, request
from controller.local.desired import kind_named

PROG = "serving delete"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=PROG, description="Delete objects from a running `serving up`.")
    p.add_argument("kind", help="service (ksvc), configmap (cm) or secret")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    add_state_dir(p)
    args = p.parse_args(argv)
    kind = kind_named(args.kind)
    if kind is None:
        p.error(f"unknown kind {args.kind!r}: use service, configmap or secret")
    code = 0
    for name in args.names:
        try:
            answer = request(args.state_dir, "DELETE", f"/v1/{kind.lower()}/{args.namespace}/{name}")
        except ControlError as exc:
            code = max(code, fail(PROG, exc))
            continue
        for line in answer["changes"]:
            print(line)
    return code
