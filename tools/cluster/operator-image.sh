#!/usr/bin/env bash
# The operator's image as the Dockerfile builds it, without a Docker engine,
# into the images cache outside the repository (once per input set): the
# static smolpaws at /smolpaws over a root filesystem with git and CA
# certificates, run as 65532. The root filesystem is the sandbox image's
# Debian (Alpine, the Dockerfile's base, cannot be pulled here). Prints the
# image's reference and archive.
#
#   operator-image.sh SMOLPAWS_BINARY SANDBOX_ARCHIVE
set -euo pipefail

smolpaws=$1
base=$2
cache="${XDG_CACHE_HOME:-$HOME/.cache}/smolpaws/images"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

key=$(cat "$smolpaws" "$base" "$0" | sha256sum | cut -c1-12)
ref="localhost/smolpaws/operator:$key"
archive="$cache/operator-$key.tar"
if [[ ! -f "$archive" ]]; then
	work=$(mktemp -d)
	trap 'rm -rf "$work" "$archive.tmp"' EXIT
	skopeo copy --quiet "oci-archive:$base" "oci:$work/oci:image"
	mkdir "$work/root"
	install -m 0755 "$smolpaws" "$work/root/smolpaws"
	tar -C "$work/root" --owner=0 --group=0 --numeric-owner -cf "$work/layer.tar" smolpaws
	umoci raw add-layer --image "$work/oci:image" "$work/layer.tar"
	umoci config --image "$work/oci:image" --config.user 65532:65532 --config.entrypoint /smolpaws
	umoci gc --layout "$work/oci"
	skopeo copy --quiet "oci:$work/oci:image" "oci-archive:$archive.tmp:$ref"
	mv "$archive.tmp" "$archive"
fi
echo "$ref $archive"
