#!/usr/bin/env bash
# Prints the crates of Cargo.lock that the tunnel's features (nix/rust.nix's
# tunnelFeatures) never use, dependencies of any kind included: the vendor
# directory of the tunnel's Nix derivations leaves them out. Regenerate with
#   nix/aws-only-crates.sh > nix/aws-only-crates.txt
# after a dependency change; tests/nix-checks.sh fails while it is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
features=$(sed -n 's/^  tunnelFeatures = "\(.*\)";$/\1/p' nix/rust.nix)
[[ -n $features ]] || { echo "no tunnelFeatures in nix/rust.nix" >&2; exit 1; }
names() {
    cargo tree --locked --offline "$@" -e normal,build,dev --prefix none --format '{p}' | awk '{print $1}' | sort -u
}
comm -13 <(names --no-default-features --features "$features") <(names --all-features)
