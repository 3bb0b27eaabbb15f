#!/usr/bin/env bash
# Builds what the chart's test runs beside the real node, from the two Go
# modules here, into a cache outside the repository (once per version set),
# and prints the directory that holds them:
#
# - kubectl (kubectl/), from the same pinned Kubernetes release as the node;
# - kube-router (kube-router/), whose network policy controller enforces
#   NetworkPolicy with iptables and ipset, which this kernel has (it lacks
#   the nftables `queue` expression kube-network-policies needs); it runs on
#   the node like kube-proxy, with Debian's ipset, installed here when
#   missing.
#
# SMOLPAWS_CLUSTER_TOOLS_DIR names a directory of prebuilt binaries instead.
set -euo pipefail

if ! command -v ipset >/dev/null; then
	if ((EUID != 0)); then
		echo "kube-router needs Debian's ipset; install it as root (apt-get install ipset)" >&2
		exit 1
	fi
	echo "installing ipset with apt-get (first run only)" >&2
	exec 8>/var/lock/smolpaws-node-apt.lock
	flock 8
	DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ipset >&2
fi

if [[ -n "${SMOLPAWS_CLUSTER_TOOLS_DIR:-}" ]]; then
	echo "$SMOLPAWS_CLUSTER_TOOLS_DIR"
	exit 0
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The version a go.mod requires of module $1, in a block or on one line.
version() { awk -v m="$1" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$2"; }
k8s=$(version k8s.io/kubernetes "$here/kubectl/go.mod")
if [[ "$k8s" != "$(version k8s.io/kubernetes "$here/../go.mod")" ]]; then
	echo "tools/cluster/kubectl/go.mod pins k8s.io/kubernetes $k8s, tools/go.mod another release: pin one" >&2
	exit 1
fi
key=$(cat "$here"/*/go.mod "$here"/*/go.sum "$0" | sha256sum | cut -c1-12)
dir="${XDG_CACHE_HOME:-$HOME/.cache}/smolpaws/tools/cluster-$k8s-$key"
bins=(kubectl kube-router)

ready() {
	local bin
	for bin in "${bins[@]}"; do [[ -x "$dir/$bin" ]] || return 1; done
}

if ready; then
	echo "$dir"
	exit 0
fi

mkdir -p "$dir"
exec 9>"$dir.lock"
flock 9
if ! ready; then
	echo "building kubectl $k8s and kube-router $(version github.com/cloudnativelabs/kube-router/v2 "$here/kube-router/go.mod")" \
		"into $dir (first run only, several minutes)" >&2
	start=$(date +%s)
	export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath"
	# Module builds carry no release stamp; set the one a release has, so
	# `kubectl version` names the pinned release.
	minor=${k8s#v1.}
	minor=${minor%%.*}
	stamp="-X k8s.io/component-base/version.gitVersion=$k8s -X k8s.io/component-base/version.gitMajor=1"
	stamp="$stamp -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
	stamp="$stamp -X k8s.io/client-go/pkg/version.gitVersion=$k8s -X k8s.io/client-go/pkg/version.gitMajor=1"
	stamp="$stamp -X k8s.io/client-go/pkg/version.gitMinor=$minor"
	(cd "$here/kubectl" && go build -ldflags="-s $stamp" -o "$dir/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl)
	(cd "$here/kube-router" && go build -ldflags=-s -o "$dir/kube-router.tmp" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router)
	for bin in "${bins[@]}"; do mv "$dir/$bin.tmp" "$dir/$bin"; done
	echo "built the cluster tools in $(($(date +%s) - start))s" >&2
fi
echo "$dir"
