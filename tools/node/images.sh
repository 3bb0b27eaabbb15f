#!/usr/bin/env bash
# Writes the real node's three images as OCI archives, without a Docker
# engine, into a cache outside the repository (each once per input set), and
# prints one line per image: its reference and its archive.
#
#   images.sh SMOLPAWS_BINARY PAUSE_BINARY
#
# - smolpaws: the static musl binary on an empty base, as the Dockerfile
#   builds it (the sandbox's init container installs the agent from it);
# - sandbox: a Debian root filesystem with git and bash from Debian's
#   packages, its default user the non-root 65532 a restricted pod runs as;
# - pause: the pod sandbox's first process (none can be pulled here).
set -euo pipefail

smolpaws=$1
pause=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/smolpaws/images"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

hash() { cat "$@" | sha256sum | cut -c1-12; }

# An OCI archive at $1 named $2 from a root filesystem tarball $3, run as
# user $4 with entrypoint $5 (empty: none).
pack() {
	local archive=$1 ref=$2 layer=$3 user=$4 entrypoint=$5 layout
	layout=$(mktemp -d)
	umoci init --layout "$layout/oci"
	umoci new --image "$layout/oci:image"
	umoci raw add-layer --image "$layout/oci:image" "$layer"
	umoci config --image "$layout/oci:image" --config.user "$user" \
		--config.env PATH=/usr/local/bin:/usr/bin:/bin --config.env HOME=/tmp \
		${entrypoint:+--config.entrypoint "$entrypoint"}
	umoci gc --layout "$layout/oci"
	skopeo copy --quiet "oci:$layout/oci:image" "oci-archive:$archive.tmp:$ref"
	mv "$archive.tmp" "$archive"
	rm -rf "$layout"
}

# A layer holding one executable at /$2, from file $1.
single() {
	local dir layer
	dir=$(mktemp -d)
	install -m 0755 "$1" "$dir/$2"
	layer=$(mktemp)
	tar -C "$dir" --owner=0 --group=0 --numeric-owner -cf "$layer" "$2"
	rm -rf "$dir"
	echo "$layer"
}

key=$(hash "$smolpaws" "$0")
ref="localhost/smolpaws/smolpaws:$key"
archive="$cache/smolpaws-$key.tar"
if [[ ! -f "$archive" ]]; then
	layer=$(single "$smolpaws" smolpaws)
	pack "$archive" "$ref" "$layer" 65532:65532 /smolpaws
	rm -f "$layer"
fi
echo "$ref $archive"

key=$(hash "$pause" "$0")
ref="localhost/smolpaws/pause:$key"
archive="$cache/pause-$key.tar"
if [[ ! -f "$archive" ]]; then
	layer=$(single "$pause" pause)
	pack "$archive" "$ref" "$layer" 65535:65535 /pause
	rm -f "$layer"
fi
echo "$ref $archive"

packages=git,bash,ca-certificates
key=$(echo "$packages" | hash - "$0")
ref="localhost/smolpaws/sandbox:$key"
archive="$cache/sandbox-$key.tar"
if [[ ! -f "$archive" ]]; then
	echo "building the sandbox image (Debian bookworm with $packages) into $archive (first run only)" >&2
	start=$(date +%s)
	layer=$(mktemp --suffix=.tar)
	# The user a restricted pod runs as, named, so that tools looking up
	# the current user (git, ssh) find one.
	mmdebstrap --quiet --variant=minbase --include="$packages" \
		--customize-hook='echo "nonroot:x:65532:65532:nonroot:/tmp:/bin/bash" >>"$1/etc/passwd"' \
		--customize-hook='echo "nonroot:x:65532:" >>"$1/etc/group"' \
		--customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
		bookworm "$layer"
	pack "$archive" "$ref" "$layer" 65532:65532 ""
	rm -f "$layer"
	echo "built the sandbox image in $(($(date +%s) - start))s" >&2
fi
echo "$ref $archive"
