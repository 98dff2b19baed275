#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine: curl (the real
# client the tests drive), file (static-binary check), zip/unzip (Lambda zip
# contract), iproute2 (the egress and reach tests' network namespaces) and Debian's nix-bin
# (flake parsing and lock checks), systemd (systemd-analyze verify of the agent's
# user unit), script (a pseudo-terminal for the progress
# line test), the reach test's corporate proxies (tests/common/corpnet.rs):
# squid-openssl (Squid with ssl-bump; it replaces the plain squid package),
# dante-server, apache2-utils (htpasswd) and openssl; moto (local
# AWS emulator), cfn-lint and pacparser from PyPI; nixfmt and deadnix from crates.io.
# Idempotent: anything present is left alone.
set -euo pipefail

need_apt=()
for tool in curl:curl file:file zip:zip unzip:unzip nix-instantiate:nix-bin ip:iproute2 script:bsdutils systemd-analyze:systemd \
    /usr/lib/squid/security_file_certgen:squid-openssl /usr/sbin/danted:dante-server htpasswd:apache2-utils openssl:openssl; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool##*:}")
done
if ((${#need_apt[@]})); then
    echo "setup: installing ${need_apt[*]} from Debian"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The local AWS emulator the telemetry, Lambda and deploy tests run against.
if ! command -v moto_server >/dev/null 2>&1; then
    echo "setup: installing moto[server] and cfn-lint"
    python3 -m pip install --quiet "moto[server]==5.*" cfn-lint
fi
command -v cfn-lint >/dev/null 2>&1 || python3 -m pip install --quiet cfn-lint
# A real PAC engine, to evaluate the agent's /proxy.pac.
python3 -c "import pacparser" 2>/dev/null || { echo "setup: installing pacparser"; python3 -m pip install --quiet "pacparser==1.5.*"; }

export PATH="$HOME/.cargo/bin:$PATH"
[[ $(nixfmt --version 2>/dev/null) == "nixfmt-rs 0.5.3" ]] || { echo "setup: installing nixfmt (nixfmt_rs 0.5.3, the version nix/nixfmt-rs.nix builds)"; cargo install --quiet --locked --version 0.5.3 nixfmt_rs; }
command -v deadnix >/dev/null 2>&1 || { echo "setup: installing deadnix"; cargo install --quiet --locked deadnix; }
