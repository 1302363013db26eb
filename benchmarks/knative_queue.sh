#!/usr/bin/env bash
# Build Knative's own queue-proxy (knative.dev/serving/cmd/queue) from its Go module, through the Go module
# proxy, into a cache outside the checkout keyed by version. A second run with the same version is free.
# benchmarks/dataplane.py runs it as the "knative queue-proxy" rows.
#
#   benchmarks/knative_queue.sh          # prints the binary's path on its last line
#
# Environment: KNATIVE_VERSION (default below), SERVING_KNATIVE_CACHE (default ~/.cache/serving/knative-queue),
# GO (default: go on PATH, else /usr/local/go/bin/go).
#
# knative.dev/serving's go.mod has a replace directive, so `go install module@version` refuses it: a small
# main module requires it, copies its replace directive and builds cmd/queue.
#
# The version: v0.42.2. v0.51.0 is listed by the module proxy here, but the pseudo-versions of knative.dev/pkg
# and knative.dev/networking it requires are not served ("403 This module version is not available"),
# so it cannot be built; v0.42.2's are.
set -euo pipefail

KNATIVE_VERSION="${KNATIVE_VERSION:-v0.42.2}"
cache="${SERVING_KNATIVE_CACHE:-$HOME/.cache/serving/knative-queue}"
out="$cache/$KNATIVE_VERSION/queue"
if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi

go="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[ -x "$go" ] || { echo "knative_queue: no Go toolchain (set GO or install Go)" >&2; exit 1; }

export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
dir="$cache/src-$KNATIVE_VERSION"
mkdir -p "$dir" "$cache/$KNATIVE_VERSION"
cd "$dir"
if [ ! -f go.sum ]; then
  rm -f go.mod
  "$go" mod init serving.test/knativequeue >/dev/null 2>&1
  gomod="$("$go" mod download -json "knative.dev/serving@$KNATIVE_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  # Its replace directives ("a => b vX" on one line or inside a replace block) apply to this module too.
  python3 - "$gomod" <<'PY' | while read -r old new; do "$go" mod edit -replace "$old=$new"; done
import re, sys
text = open(sys.argv[1]).read()
blocks = re.findall(r"^replace\s*\((.*?)^\)", text, re.M | re.S)
lines = [line for block in blocks for line in block.splitlines()]
lines += re.findall(r"^replace\s+([^(\n].*)$", text, re.M)
for line in lines:
    m = re.match(r"\s*(\S+)(?:\s+\S+)?\s*=>\s*(\S+)(?:\s+(\S+))?", line)
    if m:
        print(m.group(1), m.group(2) + ("@" + m.group(3) if m.group(3) else ""))
PY
  "$go" mod edit -require "knative.dev/serving@$KNATIVE_VERSION"
  "$go" mod edit -go "$(grep -E '^go [0-9]' "$gomod" | head -1 | awk '{print $2}')"
  cat >tools.go <<'GO'
//go:build tools

package tools

import _ "knative.dev/serving/cmd/queue"
GO
  echo "knative_queue: resolving knative.dev/serving $KNATIVE_VERSION" >&2
  "$go" mod tidy >&2
fi
echo "knative_queue: building knative.dev/serving/cmd/queue $KNATIVE_VERSION" >&2
"$go" build -trimpath -ldflags "-s -w" -o "$out.partial" knative.dev/serving/cmd/queue >&2
mv "$out.partial" "$out"
echo "$out"
