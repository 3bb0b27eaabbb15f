#!/usr/bin/env bash
# Prints the directory holding the Node peer's node_modules (the pinned
# @octokit/webhooks of package-lock.json), installing it first when it is not
# cached yet. It lives outside the repository, under
# ${SMOLPAWS_CACHE_DIR:-~/.cache/smolpaws}/node/, keyed by a hash of the
# pinned manifest and lockfile, and is made under a lock, as
# tests/python/env.sh makes its virtual environments.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache="${SMOLPAWS_CACHE_DIR:-$HOME/.cache/smolpaws}/node"
dir="$cache/peer-$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -c1-16)"
mkdir -p "$cache"
exec 9>"$cache/peer.lock"
flock 9

if [ ! -f "$dir/.complete" ]; then
    command -v npm >/dev/null || { echo "the Node peer needs node and npm (Node 20 or newer)" >&2; exit 1; }
    echo "benches/peer: installing @octokit/webhooks into $dir (once)" >&2
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$here/package.json" "$here/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
    touch "$dir/.complete"
fi
echo "$dir"
