#!/usr/bin/env bash
# Build (or reuse) the test control plane binaries, kubectl and kustomize (for the deploy/
# kustomization test) from testenv/go.mod, and sops from testenv/sops/go.mod.
# Prints the directory holding them as its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command -v go >/dev/null || {
  echo "error: Go is needed to build the test control plane: install Go 1.26 or newer (apt-get install golang, or https://go.dev/dl)" >&2
  exit 1
}
key=$(cat "$here/go.mod" "$here/go.sum" "$here/sops/go.mod" "$here/sops/go.sum" | sha256sum | cut -c1-16)
cache="${RECONCILER_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reconciler-testenv}/$key"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kustomize kwok
          sops)
complete=1
for binary in "${binaries[@]}"; do [ -x "$cache/bin/$binary" ] || complete=0; done
[ -f "$cache/bin/kwok-stages.yaml" ] || complete=0
if [ "$complete" = 1 ]; then
  echo "$cache/bin"
  exit 0
fi
cd "$here"
kubernetes=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
major_minor=${kubernetes#v}; major=${major_minor%%.*}; minor=${major_minor#*.}; minor=${minor%%.*}
ldflags="-s -w"
for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $package.gitVersion=$kubernetes -X $package.gitMajor=$major -X $package.gitMinor=$minor"
done
echo "building the test control plane ($kubernetes, $(go list -m -f '{{.Path}} {{.Version}}' go.etcd.io/etcd/server/v3 sigs.k8s.io/kwok | tr '\n' ' ')) into $cache; the first build takes a while" >&2
mkdir -p "$cache/tmp"
start=$(date +%s)
GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$cache/tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl \
  sigs.k8s.io/kustomize/kustomize/v5 \
  sigs.k8s.io/kwok/cmd/kwok
GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$cache/tmp/etcd" go.etcd.io/etcd/server/v3
# KWOK's binary has no built-in behaviour: its "fast" stages (nodes Ready at once, pods
# Ready, Job pods Succeeded) and lease heartbeats ship as YAML in its module.
stages="$(GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
for file in "$stages"/node/fast/node-*.yaml "$stages"/node/heartbeat-with-lease/node-*.yaml \
            "$stages"/pod/fast/pod-*.yaml; do
  echo "---"; cat "$file"
done > "$cache/tmp/kwok-stages.yaml"
# sops, for the secrets interoperability tests, from a module of its own (testenv/sops).
(cd "$here/sops" && GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$cache/tmp/sops" \
  github.com/getsops/sops/v3/cmd/sops)
mv "$cache/tmp" "$cache/bin.new" && rm -rf "$cache/bin" && mv "$cache/bin.new" "$cache/bin"
echo "built in $(( $(date +%s) - start )) s" >&2
echo "$cache/bin"
