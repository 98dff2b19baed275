#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time (FUZZ_SECONDS, default 60)
# and fails on any crash. Installs cargo-fuzz if missing. cargo-fuzz drives
# libFuzzer with sanitizer flags that stable rustc accepts only with
# RUSTC_BOOTSTRAP=1, which this script sets for the fuzz build alone.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --quiet --locked cargo-fuzz
seconds=${FUZZ_SECONDS:-60}
for target in config request_target socks; do
    echo "==> fuzz $target for ${seconds}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048
done
echo "fuzzing finished without a crash"
