#!/usr/bin/env bash
# Prints the directory holding the Node peer's node_modules (the pinned
# @octokit/webhooks of package-lock.json), installed into the cache outside
# the repository by tests/node/env.sh, which the contract tests share.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
exec bash "$here/../../tests/node/env.sh" "$here"
