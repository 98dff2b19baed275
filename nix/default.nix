# Everything the flake offers for one system: packages, apps, checks, the
# development shell and the formatter. Linux systems get static musl builds
# for both architectures and the server images; macOS gets the agent tools
# and the deploy tool natively, and `nix run .#deploy` there builds the
# Linux artifacts it publishes (the arm64 Lambda package and server image)
# for aarch64-linux, which takes a Linux builder (nix-darwin's
# `nix.linux-builder`), or uses the files given with --lambda-zip/--image.
{
  nixpkgs,
  crane,
  rust-overlay,
  system,
  src,
}:
let
  inherit (nixpkgs) lib;
  rustVersion = "1.95.0";
  overlays = [ rust-overlay.overlays.default ];
  pkgs = import nixpkgs {
    localSystem = system;
    inherit overlays;
  };
  inherit (pkgs.stdenv.hostPlatform) isLinux;
  hostArch = pkgs.stdenv.hostPlatform.parsed.cpu.name;

  rustFor =
    targetPkgs:
    import ./rust.nix {
      inherit crane rustVersion src;
      pkgs = targetPkgs;
    };

  # Native builds: the Darwin agent, and clippy/tests/fmt on every system.
  native = rustFor pkgs;

  # Static musl builds for both Linux architectures, cross-compiled with a
  # prebuilt toolchain from rust-overlay (no rustc built from source), on
  # `buildSystem` (this one on Linux; an aarch64-linux builder from macOS).
  muslOn =
    buildSystem:
    lib.genAttrs [ "x86_64" "aarch64" ] (
      arch:
      rustFor (
        import nixpkgs {
          localSystem = buildSystem;
          crossSystem =
            lib.systems.examples.${if arch == "x86_64" then "musl64" else "aarch64-multiplatform-musl"};
          inherit overlays;
        }
      )
    );
  musl = muslOn system;

  imageOn =
    imagePkgs:
    import ./image.nix {
      pkgs = imagePkgs;
      revision = src.rev or src.dirtyRev or "unknown";
    };
  image = imageOn pkgs;
  nixfmt = import ./nixfmt-rs.nix {
    inherit lib;
    inherit (native) craneLib;
  };
  lambdaZip = import ./lambda.nix { inherit pkgs lib; };

  linuxPackages = lib.optionalAttrs isLinux (
    {
      agent = musl.${hostArch}.agent;
      server = musl.${hostArch}.server;
      certs = musl.${hostArch}.certs;
      local = musl.${hostArch}.local;
      deploy = musl.${hostArch}.deploy;
      server-image = image hostArch musl.${hostArch}.server;
      # Lambda runs the control plane on arm64 (provided.al2023).
      lambda = musl.aarch64.lambda;
      lambda-zip = lambdaZip musl.aarch64.lambda;
    }
    // lib.concatMapAttrs (arch: built: {
      "agent-${arch}-linux-musl" = built.agent;
      "server-${arch}-linux-musl" = built.server;
      "server-image-${arch}" = image arch built.server;
    }) musl
  );

  # What the deploy tool publishes, built for Linux even from macOS.
  linuxArtifacts =
    if isLinux then
      {
        lambdaZip = packages.lambda-zip;
        serverImage = packages.server-image-aarch64;
      }
    else
      let
        onLinux = muslOn "aarch64-linux";
        linuxPkgs = import nixpkgs {
          localSystem = "aarch64-linux";
          inherit overlays;
        };
      in
      {
        lambdaZip = lambdaZip onLinux.aarch64.lambda;
        serverImage = imageOn linuxPkgs "aarch64" onLinux.aarch64.server;
      };

  darwinPackages = lib.optionalAttrs (!isLinux) {
    inherit (native)
      agent
      certs
      local
      deploy
      ;
  };

  packages =
    linuxPackages
    // darwinPackages
    // {
      default = packages.agent;
    };

  # `nix run .#deploy`: the deploy tool (the templates of this checkout are
  # built into it) with what it publishes built here — the arm64 Lambda
  # package, the arm64 server image (CpuArchitecture defaults to ARM64) —
  # and skopeo to push the image.
  # Each can be overridden by its variable or flag. Everything evaluates pure:
  # the image is then certificate-free, and the deploy tool stores certs/ of
  # the working directory in Parameter Store at run time, where ECS reads the
  # server's FLUIDITY_TLS_*_PEM from (see image.nix for the baked variant).
  deployApp = pkgs.writeShellApplication {
    name = "fluidity-deploy";
    meta.description = "Fluidity deploy tool, with the Lambda package and server image it publishes";
    runtimeInputs = [ pkgs.skopeo ];
    text = ''
      export FLUIDITY_LAMBDA_ZIP="''${FLUIDITY_LAMBDA_ZIP:-${linuxArtifacts.lambdaZip}/fluidity-lambda.zip}"
      export FLUIDITY_SERVER_IMAGE="''${FLUIDITY_SERVER_IMAGE:-${linuxArtifacts.serverImage}}"
      exec ${lib.getExe packages.deploy} "$@"
    '';
  };

  app = drv: {
    type = "app";
    program = lib.getExe drv;
    meta.description = drv.meta.description or "Fluidity";
  };
in
{
  inherit packages;

  apps = {
    agent = app packages.agent;
    certs = app packages.certs;
    local = app packages.local;
    deploy = app deployApp;
    default = app packages.agent;
  }
  // lib.optionalAttrs isLinux {
    server = app packages.server;
  };

  checks = import ./checks.nix {
    inherit
      pkgs
      lib
      native
      nixfmt
      src
      ;
    modules = import ./module-checks.nix { inherit pkgs lib packages; };
    static = lib.optionalAttrs isLinux musl.${hostArch};
    artifacts = lib.optionalAttrs isLinux {
      lambdaZip = packages.lambda-zip;
      serverImage = packages.server-image-aarch64;
      serverPort = 443;
      agents = lib.mapAttrs (_: built: built.agent) musl;
    };
  };

  devShells.default = pkgs.mkShell {
    packages = [
      native.toolchain
      pkgs.cargo-lambda
      pkgs.awscli2
      pkgs.python3Packages.cfn-lint
      pkgs.skopeo
      pkgs.curl
      nixfmt
      pkgs.deadnix
    ];
  };

  # `nix fmt` passes no arguments (Nix 2.25 and later), which nixfmt would read
  # as stdin: format the flake's tree then (nixfmt-rs skips .gitignore'd paths).
  formatter = pkgs.writeShellScriptBin "fluidity-nixfmt" ''
    exec ${lib.getExe nixfmt} "''${@:-''${PRJ_ROOT:-.}}"
  '';
}
