#!/usr/bin/env bash
# Size of the release binary that sandboxes run: statically linked for
# x86_64-unknown-linux-musl without the `dev` feature (what the image
# ships), and the glibc build with it (what `cargo run` makes).
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
cargo build --release --locked --no-default-features --target x86_64-unknown-linux-musl --bin smolpaws
cargo build --release --locked --bin smolpaws
musl="$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/smolpaws"
gnu="$CARGO_TARGET_DIR/release/smolpaws"
printf 'musl static: %s bytes (%s)\n' "$(stat -c %s "$musl")" "$(file -b "$musl" | cut -d, -f1-2)"
printf 'glibc:       %s bytes\n' "$(stat -c %s "$gnu")"
