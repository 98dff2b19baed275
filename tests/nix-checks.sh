#!/usr/bin/env bash
# Nix checks that run without a binary cache: every .nix file parses (Debian's
# nix-bin), is formatted in RFC-166 style (nixfmt-rs from crates.io, the same
# version the flake's formatter and nix-format check build), has no dead code
# (deadnix), and flake.lock matches the flake's inputs (nix flake metadata
# with --no-update-lock-file fails on any input missing from, or differing in,
# the lock). Full evaluation needs a newer Nix and a nixpkgs tree: see README.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

mapfile -t files < <(git ls-files --cached --others --exclude-standard '*.nix')
((${#files[@]})) || { echo "no .nix files found"; exit 1; }

for f in "${files[@]}"; do
    nix-instantiate --parse "$f" >/dev/null 2>/tmp/nix-parse.err || { cat /tmp/nix-parse.err; echo "parse error: $f"; exit 1; }
done
echo "ok: ${#files[@]} .nix files parse"

want=$(sed -n 's/^  version = "\(.*\)";$/\1/p' nix/nixfmt-rs.nix)
have=$(nixfmt --version)
[[ $have == "nixfmt-rs $want" ]] || { echo "nixfmt is '$have'; the flake builds nixfmt-rs $want (nix/nixfmt-rs.nix, pinned in tests/setup.sh)"; exit 1; }
nixfmt --check "${files[@]}"
echo "ok: formatted ($have, as the flake's formatter)"

deadnix --fail "${files[@]}"
echo "ok: no dead code"

# The tunnel's Nix derivations (agent, server, certs, local) build from a
# vendor directory without the crates in nix/aws-only-crates.txt: that list
# must be current, hold every aws-sdk crate of the lock (the tunnel's
# features reach none), and those components must be in the tunnel group.
fresh=$(nix/aws-only-crates.sh)
diff <(echo "$fresh") nix/aws-only-crates.txt >/dev/null || {
    diff <(echo "$fresh") nix/aws-only-crates.txt || true
    echo "nix/aws-only-crates.txt is stale: nix/aws-only-crates.sh > nix/aws-only-crates.txt"; exit 1;
}
sdk=$(sed -n 's/^name = "\(aws-sdk-[^"]*\)"$/\1/p' Cargo.lock | sort -u)
[[ -n $sdk ]] || { echo "no aws-sdk crate in Cargo.lock: the check would be vacuous"; exit 1; }
reached=$(comm -23 <(echo "$sdk") nix/aws-only-crates.txt)
[[ -z $reached ]] || { echo "the tunnel's dependency derivation would build: $reached (nix/rust.nix tunnelFeatures)"; exit 1; }
for bin in agent server certs local; do
    grep -Pzq "bin = \"fluidity-$bin\";\n    group = tunnel;" nix/rust.nix || {
        echo "fluidity-$bin is not built from the tunnel's dependencies (nix/rust.nix)"; exit 1;
    }
done
echo "ok: the tunnel's derivations leave out $(wc -l <nix/aws-only-crates.txt) crates, every aws-sdk crate among them"

python3 tests/artifact_checks_test.py 2>&1 | tail -1 | grep -qx OK || { python3 tests/artifact_checks_test.py; exit 1; }
echo "ok: the flake's artifact checks (nix/artifact-checks.py) pass their own tests"

conf=$(mktemp -d)
trap 'rm -rf "$conf"' EXIT
printf 'experimental-features = nix-command flakes\nsubstituters =\nbuild-users-group =\n' >"$conf/nix.conf"
metadata=$(NIX_CONF_DIR=$conf nix flake metadata --no-update-lock-file --offline --json . 2>"$conf/err") || {
    cat "$conf/err"; echo "flake.lock does not match flake.nix inputs"; exit 1;
}
python3 - "$metadata" <<'PY'
import json, sys
meta = json.loads(sys.argv[1])
nodes = meta["locks"]["nodes"]
root = nodes[meta["locks"]["root"]]
want = {"nixpkgs", "crane", "rust-overlay"}
got = set(root["inputs"])
assert got == want, f"lock root inputs {got} != {want}"
for name in want:
    locked = nodes[name]["locked"]
    for key in ("rev", "narHash", "lastModified"):
        assert locked.get(key), f"{name}: missing {key} in flake.lock"
    assert len(locked["rev"]) == 40, f"{name}: rev is not a full commit"
assert nodes["rust-overlay"]["inputs"]["nixpkgs"] == ["nixpkgs"], "rust-overlay must follow nixpkgs"
print("ok: flake.lock pins", ", ".join(f"{n}@{nodes[n]['locked']['rev'][:12]}" for n in sorted(want)))
PY
