#!/usr/bin/env bash
# The long soak: 10 minutes of mixed traffic through the real binaries, then a
# table of RSS and open descriptors after warm-up and at the end. Fails if RSS
# grew 10 % or more after warm-up, or descriptors leaked.
set -euo pipefail
cd "$(dirname "$0")/.."
FLUIDITY_SOAK_SECONDS=${FLUIDITY_SOAK_SECONDS:-600} \
    cargo test --locked --all-features --test soak -- --nocapture
