#!/usr/bin/env bash
# Packs a Lambda custom-runtime binary as a reproducible zip: the binary as
# `bootstrap` (mode 0755) at the zip root, a fixed timestamp, no extra file
# attributes. The flake (nix/lambda.nix) and the CI contract test
# (tests/lambda.rs) both call this, so both assemble the zip the same way.
#
# usage: lambda-zip.sh BINARY OUT.zip
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 BINARY OUT.zip" >&2
    exit 2
fi
binary=$1
out=$(realpath -m "$2")
if [ ! -f "$binary" ]; then
    echo "lambda-zip: no binary at $binary" >&2
    exit 1
fi
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -m 0755 "$binary" "$stage/bootstrap"
# 1980-01-01, the earliest time a zip entry can hold; zip stores local time.
TZ=UTC touch -d @315532800 "$stage/bootstrap"
rm -f "$out"
(cd "$stage" && TZ=UTC zip -q -X -D "$out" bootstrap)
