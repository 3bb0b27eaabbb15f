#!/usr/bin/env bash
# smolpaws `agent serve` and openhands-agent-server 1.58.2 side by side, in
# one run on this machine, as an SDK user meets them: SDK execute_command
# ("true") p50/p90, 1 MiB file_download p50, start to healthy, idle RSS, and
# the ratio. Both servers come from what this repository pins: smolpaws built
# here (release), the agent-server from tests/python/openhands/requirements.txt
# in the cached environment tests/python/env.sh makes.
#
#   benches/runner_vs_agent_server.sh
#   SMOLPAWS_BIN=path/to/smolpaws BENCH_COMMANDS=500 benches/runner_vs_agent_server.sh
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv=$(bash "$repo/tests/python/env.sh" openhands)

if [ -z "${SMOLPAWS_BIN:-}" ]; then
    cargo build --release --quiet --bin smolpaws --manifest-path "$repo/Cargo.toml"
    SMOLPAWS_BIN="${CARGO_TARGET_DIR:-$repo/target}/release/smolpaws"
fi

cd "$repo/benches"
LITELLM_LOCAL_MODEL_COST_MAP=True OPENHANDS_SUPPRESS_BANNER=1 \
    "$venv/bin/python" runner_vs_agent_server.py "$SMOLPAWS_BIN"
