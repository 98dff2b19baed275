# Crane for one target package set: the pinned toolchain, the cleaned source,
# dependencies built once, and one derivation per component, each built with
# only its own cargo feature (so the agent links no AWS SDK). On musl targets
# the binaries are linked statically (+crt-static, explicit).
{
  crane,
  pkgs,
  rustVersion,
  src,
}:
let
  inherit (pkgs) lib;
  toolchainFor =
    p:
    p.rust-bin.stable.${rustVersion}.default.override {
      targets = [
        "x86_64-unknown-linux-musl"
        "aarch64-unknown-linux-musl"
      ];
    };
  craneLib = (crane.mkLib pkgs).overrideToolchain toolchainFor;
  isStatic = pkgs.stdenv.hostPlatform.isMusl;

  # The Cargo sources, and the templates and parameter files that
  # fluidity-deploy builds in (include_str! of cloudformation/).
  cargoAndTemplates =
    path: type:
    craneLib.filterCargoSources path type
    || (
      baseNameOf (dirOf path) == "cloudformation"
      && (lib.hasSuffix ".yaml" path || lib.hasSuffix ".json" path)
    );

  commonArgs = {
    src = lib.cleanSourceWith {
      src = lib.cleanSource src;
      filter = cargoAndTemplates;
      name = "fluidity-source";
    };
    strictDeps = true;
    doCheck = false;
    CARGO_PROFILE = "release";
  }
  // lib.optionalAttrs isStatic {
    CARGO_BUILD_RUSTFLAGS = "-C target-feature=+crt-static";
  };

  # Dependencies of every component, compiled once and shared.
  cargoArtifacts = craneLib.buildDepsOnly (
    commonArgs
    // {
      pname = "fluidity-deps";
      cargoExtraArgs = "--locked --all-features";
    }
  );

  component =
    {
      bin,
      features,
      description,
    }:
    craneLib.buildPackage (
      commonArgs
      // {
        inherit cargoArtifacts;
        pname = bin;
        cargoExtraArgs = "--locked --no-default-features --features ${features} --bin ${bin}";
        meta = {
          inherit description;
          mainProgram = bin;
          license = lib.licenses.mit;
        };
      }
    );
in
{
  inherit craneLib commonArgs cargoArtifacts;
  toolchain = toolchainFor pkgs;

  agent = component {
    bin = "fluidity-agent";
    features = "agent";
    description = "Fluidity agent: local HTTP proxy over a mutual-TLS HTTP/2 tunnel";
  };
  server = component {
    bin = "fluidity-server";
    features = "server";
    description = "Fluidity server: mutual-TLS 1.3 forward proxy";
  };
  certs = component {
    bin = "fluidity-certs";
    features = "certs";
    description = "Fluidity certificate tool: CA, server and client certificates";
  };
  lambda = component {
    bin = "fluidity-lambda";
    features = "lambda";
    description = "Fluidity control plane: the wake, status, sleep and kill Lambda functions";
  };
  deploy = component {
    bin = "fluidity-deploy";
    features = "deploy";
    description = "Fluidity deploy tool: publishes the artifacts and manages the CloudFormation stacks";
  };
  local = component {
    bin = "fluidity-local";
    features = "agent,server,certs";
    description = "Fluidity local mode: agent and server on this machine";
  };
}
