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
