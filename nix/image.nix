# The server's OCI image: the static server, a CA bundle for outbound TLS, a
# numeric non-root user, 443 exposed (Fargate's task definition lowers the
# namespaced sysctl net.ipv4.ip_unprivileged_port_start to the port; Docker
# 20.10 and later set it to 0 in a container). The server is linked at
# /bin/fluidity-server for the container health check.
#
# Two ways for the server to get its CA, certificate and key:
#
# - Certificate-free (the default, and what a pure evaluation gives): the image
#   holds no certificate and no key. The server reads FLUIDITY_TLS_CA_PEM,
#   FLUIDITY_TLS_CERT_PEM and FLUIDITY_TLS_KEY_PEM, which ECS injects from the
#   Parameter Store parameters that `fluidity-deploy` writes from certs/ (see
#   cloudformation/fargate.yaml). This is the image `nix run .#deploy` pushes.
#
# - Baked: FLUIDITY_IMAGE_CERTS_DIR names the directory written by fluidity-certs
#   (a variable of its own: FLUIDITY_CERTS_DIR, which the certs and deploy
#   tools read, must not silently put a private key into the store)
#   (absolute, or relative to the working directory), read at evaluation time,
#   hence --impure:
#
#     FLUIDITY_IMAGE_CERTS_DIR=certs nix build .#server-image --impure
#
#   ca.crt, server.crt and server.key land in /etc/fluidity/certs, under the
#   working directory, where the server looks by default; no TLS path is set in
#   the environment, so FLUIDITY_TLS_*_PEM variables, if given, still take
#   precedence. The key is then in the local Nix store (world-readable) and in
#   the image. A directory or file that is not there fails the evaluation with
#   one line saying what to run.
#
# (.#server-image is this machine's architecture; Fargate's default ARM64 task
# needs .#server-image-aarch64.)
{ pkgs, revision }:
arch: server:
let
  inherit (pkgs) lib;
  cargo = (builtins.fromTOML (builtins.readFile ../Cargo.toml)).package;
  wanted = [
    "ca.crt"
    "server.crt"
    "server.key"
  ];
  fromEnv = builtins.getEnv "FLUIDITY_IMAGE_CERTS_DIR";
  pwd = builtins.getEnv "PWD";
  certsDir =
    if lib.hasPrefix "/" fromEnv then
      fromEnv
    else if pwd != "" then
      "${pwd}/${fromEnv}"
    else
      throw "FLUIDITY_IMAGE_CERTS_DIR=${fromEnv} is relative and PWD is unset: give an absolute path and build with --impure";
  certsPath = /. + certsDir;
  missing = lib.filter (f: !builtins.pathExists (certsPath + "/${f}")) wanted;
  fix = "run `nix run .#certs -- --dir DIR` with DIR as in FLUIDITY_IMAGE_CERTS_DIR to write ${lib.concatStringsSep ", " wanted} there, or unset it for the certificate-free image";
  certs =
    if !builtins.pathExists certsPath then
      throw "FLUIDITY_IMAGE_CERTS_DIR: ${certsDir} does not exist; ${fix}"
    else if !lib.pathIsDirectory certsPath then
      throw "FLUIDITY_IMAGE_CERTS_DIR: ${certsDir} is not a directory; ${fix}"
    else if missing != [ ] then
      throw "FLUIDITY_IMAGE_CERTS_DIR: ${lib.concatStringsSep ", " missing} missing in ${certsDir}; ${fix}"
    else
      pkgs.runCommand "fluidity-image-certs"
        {
          src = builtins.path {
            name = "fluidity-certs";
            path = certsPath;
            filter = path: _type: lib.elem (baseNameOf path) wanted;
          };
        }
        ''
          mkdir -p $out/etc/fluidity/certs
          for f in ${lib.concatStringsSep " " wanted}; do
            test -s "$src/$f" || { echo "$f is empty in ${certsDir} (run fluidity-certs again)" >&2; exit 1; }
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
    server
  ]
  ++ lib.optional (fromEnv != "") certs;
  # The working directory the server reads certs/ from, and a /tmp, exist in
  # the certificate-free image too (Fargate mounts the root read-only).
  extraCommands = ''
    mkdir -p etc/fluidity tmp
    chmod 1777 tmp
  '';
  config = {
    # OCI annotations: which commit the image was built from (`-dirty` for a
    # tree with uncommitted changes); the source URL when Cargo.toml names
    # the repository.
    Labels = {
      "org.opencontainers.image.title" = "fluidity-server";
      "org.opencontainers.image.version" = cargo.version;
      "org.opencontainers.image.revision" = revision;
      "org.opencontainers.image.licenses" = cargo.license;
    }
    // lib.optionalAttrs (cargo ? repository) { "org.opencontainers.image.source" = cargo.repository; };
    Entrypoint = [ "/bin/fluidity-server" ];
    WorkingDir = "/etc/fluidity";
    User = "65532:65532";
    ExposedPorts."443/tcp" = { };
    Env = [
      "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt"
      "FLUIDITY_LISTEN=0.0.0.0:443"
      "FLUIDITY_LOG_FORMAT=json"
    ];
  };
}
