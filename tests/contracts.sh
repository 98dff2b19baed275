#!/usr/bin/env bash
# Checks, without Nix, the contracts the flake's artifacts must meet:
# the server built with +crt-static (only its feature) is a static executable
# that starts and answers --help.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=target/static \
    cargo build --locked --release --target "$target" --no-default-features --features server --bin fluidity-server
bin=target/static/$target/release/fluidity-server
description=$(file -b "$bin")
echo "fluidity-server: $description"
grep -Eq 'static(-pie)? linked|statically linked' <<<"$description" || { echo "not static: $description"; exit 1; }
if ldd "$bin" >/dev/null 2>&1; then
    ldd_out=$(ldd "$bin" 2>&1 || true)
    grep -q 'statically linked\|not a dynamic executable' <<<"$ldd_out" || { echo "ldd sees dynamic deps: $ldd_out"; exit 1; }
fi
"$bin" --help | grep -q -- '--listen' || { echo "static server does not run"; exit 1; }
echo "ok: static server binary runs"
