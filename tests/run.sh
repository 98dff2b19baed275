#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this):
#   setup (curl, nix-bin, nixfmt, deadnix…), formatting, clippy, unit and
#   integration tests, the dependency policy (no aws-lc-sys), the static-binary
#   contract and the Nix checks (parse, format, dead code, lock consistency).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# Each step says how much disk is left: a full disk fails a test far from its cause.
step() { printf '\n==> %s   (disk free: %s)\n' "$*" "$(df -h --output=avail . | tail -1 | tr -d ' ')"; }

# CI builds each profile once from scratch: incremental caches would only take disk.
if [[ ${CI:-} == true ]]; then export CARGO_INCREMENTAL=0; fi

step "setup"
tests/setup.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, all features, -D warnings)"
cargo clippy --locked --all-targets --all-features -- -D warnings

step "per-feature builds (each component with only its own feature, as nix builds it)"
for feature in agent server lambda deploy certs; do
    echo "--features $feature"
    cargo check --locked --no-default-features --features "$feature" --lib --bins
done

step "cargo test (all features)"
# The agent follows HTTPS_PROXY and its kin as curl does; the tests set them
# where they mean to, so a proxy of the machine running them must not leak in
# (everything is fetched by now: the builds above used it).
env -u HTTPS_PROXY -u https_proxy -u ALL_PROXY -u all_proxy -u HTTP_PROXY -u http_proxy -u NO_PROXY -u no_proxy \
    cargo test --locked --all-features

step "dependency policy: aws-lc-sys must not be in the tree"
if tree=$(cargo tree --locked --all-features -i aws-lc-sys 2>&1); then
    echo "aws-lc-sys is a dependency:"; echo "$tree"; exit 1
fi
grep -q 'did not match any packages' <<<"$tree" || { echo "unexpected cargo tree output: $tree"; exit 1; }
echo "ok: aws-lc-sys absent"

step "fuzz (bounded: 20 s per target)"
FUZZ_SECONDS=${FUZZ_SECONDS:-20} tests/fuzz.sh

step "artifact contracts"
tests/contracts.sh

step "nix checks"
tests/nix-checks.sh

printf '\nall checks passed (disk free: %s)\n' "$(df -h --output=avail . | tail -1 | tr -d ' ')"
