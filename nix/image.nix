# The server's OCI image: the static server, a CA bundle for outbound TLS, our
# CA and server certificate and key, a numeric non-root user, 8443 exposed.
#
# Private keys are never in git, so the certificates come from the directory
# named by FLUIDITY_CERTS_DIR, read at evaluation time (hence --impure):
#
#   FLUIDITY_CERTS_DIR=$PWD/certs nix build .#server-image --impure
# (.#server-image is this machine's architecture; Fargate's default ARM64
# task needs .#server-image-aarch64)
#
# Without it the image still evaluates, and building it fails with that line.
# The files land in /etc/fluidity/certs, the working directory, where the
# server looks by default; no TLS path is set in the environment, so the
# FLUIDITY_TLS_*_PEM variables that ECS injects from Secrets Manager (the
# production alternative, see cloudformation/fargate.yaml) take precedence.
# The server is linked at /bin/fluidity-server for the container health check.
{ pkgs }:
arch: server:
let
  inherit (pkgs) lib;
  certsDir = builtins.getEnv "FLUIDITY_CERTS_DIR";
  wanted = [
    "ca.crt"
    "server.crt"
    "server.key"
  ];
  certs =
    if certsDir == "" then
      pkgs.runCommand "fluidity-image-certs-missing" { } ''
        echo "set FLUIDITY_CERTS_DIR to the directory written by fluidity-certs and build with --impure, e.g." >&2
        echo "  FLUIDITY_CERTS_DIR=\$PWD/certs nix build .#server-image --impure" >&2
        exit 1
      ''
    else
      pkgs.runCommand "fluidity-image-certs"
        {
          src = builtins.path {
            name = "fluidity-certs";
            path = /. + certsDir;
            filter = path: _type: lib.elem (baseNameOf path) wanted;
          };
        }
        ''
          mkdir -p $out/etc/fluidity/certs
          for f in ${lib.concatStringsSep " " wanted}; do
            test -s "$src/$f" || { echo "missing $f in ${certsDir} (run fluidity-certs first)" >&2; exit 1; }
            cp "$src/$f" $out/etc/fluidity/certs/
          done
        '';
in
pkgs.dockerTools.buildLayeredImage {
  name = "fluidity-server";
  tag = "latest";
  architecture = if arch == "aarch64" then "arm64" else "amd64";
  contents = [
    pkgs.dockerTools.caCertificates
    certs
    server
  ];
  config = {
    Entrypoint = [ "/bin/fluidity-server" ];
    WorkingDir = "/etc/fluidity";
    User = "65532:65532";
    ExposedPorts."8443/tcp" = { };
    Env = [
      "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt"
      "FLUIDITY_LISTEN=0.0.0.0:8443"
      "FLUIDITY_LOG_FORMAT=json"
    ];
  };
}
