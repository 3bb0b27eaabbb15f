#!/usr/bin/env bash
# Size of the release binary the image ships: statically linked for
# x86_64-unknown-linux-musl without the `dev` feature, in the `dist`
# profile the Dockerfile uses, stripped as that profile strips it, with the
# largest crates in it named. One
# whole-program link gives both figures: it is built with its symbols, which
# the breakdown reads, and a stripped copy is measured.
#   bash benches/binary_size.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/smolpaws/target}"
if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
	rustup target add x86_64-unknown-linux-musl
fi
if ! command -v musl-gcc >/dev/null; then
	# ring compiles C for the target.
	apt-get install -y -q musl-tools >/dev/null
fi
CARGO_PROFILE_DIST_STRIP=false cargo build --profile dist --locked --no-default-features \
	--target x86_64-unknown-linux-musl --bin smolpaws
binary="$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/dist/smolpaws"
stripped=$(mktemp)
trap 'rm -f "$stripped"' EXIT
strip -o "$stripped" "$binary"
size=$(stat -c %s "$stripped")
printf '| static release binary, stripped | %.1f MB | the size by crate below | | ≤ 20 MB |\n' \
	"$(echo "$size / 1000000" | bc -l)"
printf '(%s bytes; %s)\n\n' "$size" "$(file -b "$binary" | cut -d, -f1-2)"
# Symbols by the crate their demangled path starts with (an impl block
# counts for the crate of its type); sizes are of code and data symbols, so
# they sum to less than the file.
echo "| crate | bytes | share of the stripped file |"
echo "| --- | --- | --- |"
nm -S -C --defined-only "$binary" | awk '
	function hex(digits, n, i) {
		n = 0
		digits = tolower(digits)
		for (i = 1; i <= length(digits); i++) n = n * 16 + index("0123456789abcdef", substr(digits, i, 1)) - 1
		return n
	}
	NF >= 4 {
		name = $4
		for (i = 5; i <= NF; i++) name = name " " $i
		sub(/^(<|&|dyn |mut )+/, "", name)
		crate = name
		if (index(name, "::") > 0) crate = substr(name, 1, index(name, "::") - 1)
		else crate = "(C and unnamed)"
		bytes[crate] += hex($2)
	}
	END {
		for (c in bytes) printf "%d %s\n", bytes[c], c
	}' | sort -rn | head -25 | while read -r bytes crate; do
	printf '| %s | %s | %.1f%% |\n' "$crate" "$bytes" "$(echo "100 * $bytes / $size" | bc -l)"
done
