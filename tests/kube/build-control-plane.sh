#!/usr/bin/env bash
# Build a Kubernetes control plane (kube-apiserver, kube-controller-manager) and etcd from their Go modules,
# plus helm, into a cache outside the checkout keyed by version. A second run with the same versions is free.
#
#   tests/kube/build-control-plane.sh          # prints the bin directory on its last line
#
# Environment: SERVING_KUBE_CACHE (default ~/.cache/serving/kube), KUBE_VERSION, ETCD_VERSION, HELM_VERSION.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v4.3.2}"
cache="${SERVING_KUBE_CACHE:-$HOME/.cache/serving/kube}"
bin="$cache/bin-kube-$KUBE_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
binaries=(kube-apiserver kube-controller-manager etcd helm)

have_all() {
  for b in "${binaries[@]}"; do [ -x "$bin/$b" ] || return 1; done
}
if have_all; then
  echo "$bin"
  exit 0
fi

export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
work="$cache/src"
mkdir -p "$work" "$bin.partial"

log() { echo "build-control-plane: $*" >&2; }

# Kubernetes: the k8s.io/kubernetes module replaces every staging module with a relative path; a tiny main
# module requires it and pins each staging module to the release that matches (v1.X.Y -> v0.X.Y).
build_kube() {
  local dir="$work/kube-$KUBE_VERSION" staging="v0${KUBE_VERSION#v1}"
  mkdir -p "$dir"
  cd "$dir"
  if [ ! -f go.mod ]; then
    go mod init serving.test/controlplane >/dev/null 2>&1
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
    # Every "k8s.io/x => ./staging/src/k8s.io/x" becomes "k8s.io/x => k8s.io/x v0.X.Y".
    grep -oE 'k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" | awk '{print $1}' | sort -u |
      while read -r m; do go mod edit -replace "$m=$m@$staging"; done
    go mod edit -require "k8s.io/kubernetes@$KUBE_VERSION"
    local goline
    goline="$(grep -E '^go [0-9]' "$gomod" | head -1 | awk '{print $2}')"
    go mod edit -go "$goline"
    cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
    log "resolving k8s.io/kubernetes $KUBE_VERSION (staging $staging)"
    go mod tidy >&2
  fi
  for cmd in kube-apiserver kube-controller-manager; do
    if [ ! -x "$bin.partial/$cmd" ]; then
      log "building $cmd"
      go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION" \
        -o "$bin.partial/$cmd" "k8s.io/kubernetes/cmd/$cmd" >&2
    fi
  done
}

# etcd: its server module carries the process's main in etcdmain.
build_etcd() {
  local dir="$work/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  cd "$dir"
  if [ ! -f go.mod ]; then
    go mod init serving.test/etcd >/dev/null 2>&1
    cat >main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    go mod edit -require "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    log "resolving etcd $ETCD_VERSION"
    go mod tidy >&2
  fi
  if [ ! -x "$bin.partial/etcd" ]; then
    log "building etcd"
    go build -trimpath -ldflags "-s -w" -o "$bin.partial/etcd" . >&2
  fi
}

build_helm() {
  local dir="$work/helm-$HELM_VERSION" major="${HELM_VERSION%%.*}"
  mkdir -p "$dir"
  cd "$dir"
  if [ ! -f go.mod ]; then
    go mod init serving.test/helm >/dev/null 2>&1
    cat >tools.go <<GO
//go:build tools

package tools

import _ "helm.sh/helm/$major/cmd/helm"
GO
    go mod edit -require "helm.sh/helm/$major@$HELM_VERSION"
    log "resolving helm $HELM_VERSION"
    go mod tidy >&2
  fi
  if [ ! -x "$bin.partial/helm" ]; then
    log "building helm"
    go build -trimpath -ldflags "-s -w" -o "$bin.partial/helm" "helm.sh/helm/$major/cmd/helm" >&2
  fi
}

build_etcd
build_kube
build_helm
for b in "${binaries[@]}"; do [ -x "$bin.partial/$b" ] || { log "missing $b after build"; exit 1; }; done
rm -rf "$bin"
mv "$bin.partial" "$bin"
echo "$bin"
