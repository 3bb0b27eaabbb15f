#!/usr/bin/env bash
# In-process delivery benchmark with its Node peer: installs the pinned
# @octokit/webhooks (benches/peer/env.sh, into the cache) and runs
# benches/intake_delivery.rs, which prints each figure beside its floor and
# the peer, measured in the same run.
#   bash benches/intake_delivery.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SMOLPAWS_NODE_PEER=$(bash benches/peer/env.sh) exec cargo bench --locked --bench intake_delivery
