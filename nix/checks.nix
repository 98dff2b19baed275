# `nix flake check`: the packages, clippy with -D warnings, rustfmt, the test
# suite, each component's feature on its own, Nix formatting (nixfmt-rs, the
# release CI installs) and dead code, no aws-lc-sys in the lock file, and that
# the musl binaries are static; on Linux, the artifacts as deployed (the
# Lambda zip, the arm64 server image, the agents of both architectures),
# read by nix/artifact-checks.py (its own tests: tests/artifact_checks_test.py).
{
  pkgs,
  lib,
  native,
  static,
  modules,
  artifacts,
  nixfmt,
  src,
}:
let
  inherit (native) craneLib commonArgs cargoArtifacts;
  # `cargo check` of the library and binaries with only one component's
  # feature, on the host, from the shared dependency artifacts: a feature leak
  # (code of one component needing another's dependency) fails here, as in
  # tests/run.sh. Darwin ships the agent, certificate and deploy tools.
  features = [
    "agent"
    "server"
    "certs"
    "deploy"
  ]
  ++ lib.optionals pkgs.stdenv.hostPlatform.isLinux [ "lambda" ];
  featureCheck =
    feature:
    craneLib.mkCargoDerivation (
      commonArgs
      // {
        inherit cargoArtifacts;
        pname = "fluidity-feature-${feature}";
        doInstallCargoArtifacts = false;
        buildPhaseCargoCommand = "cargoWithProfile check --locked --no-default-features --features ${feature} --lib --bins";
      }
    );
  nixFiles = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ../.;
  };
in
{
  clippy = craneLib.cargoClippy (
    commonArgs
    // {
      inherit cargoArtifacts;
      cargoClippyExtraArgs = "--all-targets --all-features -- -D warnings";
    }
  );

  fmt = craneLib.cargoFmt { src = craneLib.cleanCargoSource src; };

  tests = craneLib.cargoTest (
    commonArgs
    // {
      inherit cargoArtifacts;
      doCheck = true;
      # The suites that need only curl. Those against the AWS emulator need
      # Python, moto and the test scripts that cleanCargoSource drops; they
      # run in tests/run.sh.
      cargoTestExtraArgs = "--all-features --lib --test tunnel --test cli --test resilience";
      nativeCheckInputs = [ pkgs.curl ];
      # The tests talk over loopback, which the macOS sandbox denies otherwise.
      __darwinAllowLocalNetworking = true;
    }
  );

  nix-format = pkgs.runCommand "fluidity-nix-format" { nativeBuildInputs = [ nixfmt ]; } ''
    find ${nixFiles} -name '*.nix' -exec nixfmt --check {} +
    touch $out
  '';

  nix-deadcode = pkgs.runCommand "fluidity-nix-deadcode" { nativeBuildInputs = [ pkgs.deadnix ]; } ''
    deadnix --fail ${nixFiles}
    touch $out
  '';

  inherit modules;

  no-aws-lc = pkgs.runCommand "fluidity-no-aws-lc" { } ''
    if grep -q 'name = "aws-lc-sys"' ${../Cargo.lock}; then
      echo "aws-lc-sys is in Cargo.lock; use rustls with the ring provider" >&2
      exit 1
    fi
    touch $out
  '';
}
// lib.listToAttrs (
  map (feature: lib.nameValuePair "feature-${feature}" (featureCheck feature)) features
)
// lib.optionalAttrs (artifacts != { }) (
  let
    check =
      name: args:
      pkgs.runCommand "fluidity-${name}" { nativeBuildInputs = [ pkgs.python3 ]; } ''
        python3 ${./artifact-checks.py} ${args}
        touch $out
      '';
  in
  {
    lambda-zip-contents = check "lambda-zip-contents" "lambda ${artifacts.lambdaZip}/fluidity-lambda.zip";
    server-image-config = check "server-image-config" "image ${artifacts.serverImage} ${toString artifacts.serverPort}";
    agents-static = pkgs.runCommand "fluidity-agents-static" { nativeBuildInputs = [ pkgs.python3 ]; } (
      lib.concatMapStrings (arch: ''
        python3 ${./artifact-checks.py} static ${arch} ${lib.getExe artifacts.agents.${arch}}
      '') (lib.attrNames artifacts.agents)
      + "touch $out\n"
    );
  }
)
// lib.optionalAttrs (static != { }) {
  inherit (static) agent server;
  static-binaries =
    pkgs.runCommand "fluidity-static-binaries" { nativeBuildInputs = [ pkgs.file ]; }
      ''
        for bin in ${lib.getExe static.agent} ${lib.getExe static.server}; do
          description=$(file -b "$bin")
          echo "$bin: $description"
          case "$description" in
            *"statically linked"* | *"static-pie linked"*) ;;
            *) echo "not static" >&2; exit 1 ;;
          esac
        done
        touch $out
      '';
}
