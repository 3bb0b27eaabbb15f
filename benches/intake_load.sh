#!/usr/bin/env bash
# End-to-end intake load benchmark: installs vegeta (a maintained HTTP load
# generator, built from the Go module proxy into the tools cache) and runs
# benches/intake_load.rs, which prints the figures.
#   RATES="50 500" SECONDS=30 bash benches/intake_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${XDG_CACHE_HOME:-$HOME/.cache}/smolpaws/tools/vegeta-v12.13.0"
if [[ ! -x "$bin/vegeta" ]]; then
	echo "installing vegeta v12.13.0 into $bin" >&2
	GOBIN="$bin" GOFLAGS=-mod=mod go install github.com/tsenart/vegeta/v12@v12.13.0
fi
VEGETA="$bin/vegeta" exec cargo bench --bench intake_load
