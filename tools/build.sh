#!/usr/bin/env bash
# Builds the pinned upstream test binaries (kube-apiserver, etcd, helm) from
# this Go module into a cache outside the repository, once per version set,
# and prints the directory that holds them.
#
# SMOLPAWS_TOOLS_DIR names a directory of prebuilt binaries and skips the
# build (for example one filled by setup-envtest plus a helm binary).
set -euo pipefail

if [[ -n "${SMOLPAWS_TOOLS_DIR:-}" ]]; then
	echo "$SMOLPAWS_TOOLS_DIR"
	exit 0
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version() { awk -v m="$1" '$1 == m { print $2; exit }' "$here/go.mod"; }
key=$(cat "$here/go.mod" "$here/go.sum" "$0" | sha256sum | cut -c1-12)
dir="${XDG_CACHE_HOME:-$HOME/.cache}/smolpaws/tools/kubernetes-$(version k8s.io/kubernetes)-$key"
bins=(kube-apiserver etcd helm)

ready() {
	local bin
	for bin in "${bins[@]}"; do [[ -x "$dir/$bin" ]] || return 1; done
}

if ready; then
	echo "$dir"
	exit 0
fi

mkdir -p "$dir"
# Test binaries may start at once; one builds, the others wait for it.
exec 9>"$dir.lock"
flock 9
if ! ready; then
	echo "building kube-apiserver $(version k8s.io/kubernetes), etcd $(version go.etcd.io/etcd/server/v3)," \
		"helm $(version helm.sh/helm/v4) into $dir (first run only, several minutes)" >&2
	start=$(date +%s)
	cd "$here"
	export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath"
	# Module builds carry no release stamp; set the one upstream's release
	# build would, so the apiserver reports its real version.
	k8s=$(version k8s.io/kubernetes)
	minor=${k8s#v1.}
	minor=${minor%%.*}
	stamp="-X k8s.io/component-base/version.gitVersion=$k8s -X k8s.io/component-base/version.gitMajor=1"
	stamp="$stamp -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
	go build -ldflags="-s $stamp" -o "$dir/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
	go build -ldflags=-s -o "$dir/etcd.tmp" go.etcd.io/etcd/server/v3
	go build -ldflags="-s -X helm.sh/helm/v4/internal/version.version=$(version helm.sh/helm/v4)" \
		-o "$dir/helm.tmp" helm.sh/helm/v4/cmd/helm
	for bin in "${bins[@]}"; do mv "$dir/$bin.tmp" "$dir/$bin"; done
	echo "built the test tools in $(($(date +%s) - start))s" >&2
fi
echo "$dir"
