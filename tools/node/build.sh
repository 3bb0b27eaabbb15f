#!/usr/bin/env bash
# Makes the parts of the real-node tests' one-node cluster ready and prints
# the directory holding the built ones:
# - from Debian's packages (installed with apt-get when missing): containerd,
#   runc, the CNI plugins, and the image tools (umoci, skopeo, mmdebstrap);
# - built from pinned Go modules into a cache outside the repository, once
#   per input set: kubelet, kube-scheduler, kube-controller-manager and
#   kube-proxy from the Kubernetes release ../go.mod pins (this module must
#   pin the same), CoreDNS from ../coredns, and the pods' pause binary.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The version a go.mod requires of module $1, in a block or on one line.
version() { awk -v m="$1" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$2"; }
k8s=$(version k8s.io/kubernetes "$here/go.mod")
if [[ "$k8s" != "$(version k8s.io/kubernetes "$here/../go.mod")" ]]; then
	echo "tools/node/go.mod pins k8s.io/kubernetes $k8s, tools/go.mod another release: pin one" >&2
	exit 1
fi

# Debian's runc, not crun: crun refuses a host with cgroup v1 and v2 mounts
# side by side ("cgroups in hybrid mode not supported").
packages=(containerd runc containernetworking-plugins umoci skopeo mmdebstrap)
missing=()
for package in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if ((${#missing[@]})); then
	if ((EUID != 0)); then
		echo "the real node needs Debian packages ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
		exit 1
	fi
	echo "installing ${missing[*]} with apt-get (first run only)" >&2
	exec 8>/var/lock/smolpaws-node-apt.lock
	flock 8
	DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

key=$(cat "$here/go.mod" "$here/go.sum" "$here"/*.go "$here/pause/main.go" \
	"$here/../coredns/go.mod" "$here/../coredns/go.sum" "$here/../coredns/main.go" "$0" |
	sha256sum | cut -c1-12)
dir="${XDG_CACHE_HOME:-$HOME/.cache}/smolpaws/tools/node-$k8s-$key"
bins=(kubelet kube-scheduler kube-controller-manager kube-proxy coredns pause)

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
	coredns=$(version github.com/coredns/coredns "$here/../coredns/go.mod")
	echo "building kubelet, kube-scheduler, kube-controller-manager, kube-proxy $k8s and coredns $coredns" \
		"into $dir (first run only, many minutes)" >&2
	start=$(date +%s)
	export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath"
	minor=${k8s#v1.}
	minor=${minor%%.*}
	stamp="-X k8s.io/component-base/version.gitVersion=$k8s -X k8s.io/component-base/version.gitMajor=1"
	stamp="$stamp -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
	cd "$here"
	for bin in kubelet kube-scheduler kube-controller-manager kube-proxy; do
		go build -ldflags="-s $stamp" -o "$dir/$bin.tmp" "k8s.io/kubernetes/cmd/$bin"
	done
	go build -ldflags=-s -o "$dir/pause.tmp" ./pause
	cd "$here/../coredns"
	go build -ldflags="-s" -o "$dir/coredns.tmp" .
	for bin in "${bins[@]}"; do mv "$dir/$bin.tmp" "$dir/$bin"; done
	echo "built the node's parts in $(($(date +%s) - start))s" >&2
fi
echo "$dir"
