#!/usr/bin/env bash
# Prints the directory holding the node_modules of the Node package in DIR
# (its package.json and the pinned package-lock.json), installing them with
# `npm ci` first when they are not cached yet. They live outside the
# repository, under ${SMOLPAWS_CACHE_DIR:-~/.cache/smolpaws}/node/, keyed by
# DIR's name and a hash of its manifest and lockfile, and are installed
# under a lock, as tests/python/env.sh makes its virtual environments, so
# test binaries running at once install them once.
set -euo pipefail

from=$(cd "${1:?usage: env.sh DIR}" && pwd)
name=$(basename "$from")
[ -f "$from/package-lock.json" ] || { echo "no $from/package-lock.json" >&2; exit 2; }
cache="${SMOLPAWS_CACHE_DIR:-$HOME/.cache/smolpaws}/node"
dir="$cache/$name-$(cat "$from/package.json" "$from/package-lock.json" | sha256sum | cut -c1-16)"
mkdir -p "$cache"
exec 9>"$cache/$name.lock"
flock 9

if [ ! -f "$dir/.complete" ]; then
    for tool in node npm; do
        command -v "$tool" >/dev/null || {
            echo "$from needs node and npm (Node 20 or newer) on PATH: install Node.js" >&2
            exit 1
        }
    done
    echo "installing the Node packages of $from into $dir (once)" >&2
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$from/package.json" "$from/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
    touch "$dir/.complete"
fi
echo "$dir"
