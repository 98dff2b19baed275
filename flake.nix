{
  description = "Fluidity: a secure tunnel through a server you own, woken on demand";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    crane.url = "github:ipetkov/crane";
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      crane,
      rust-overlay,
    }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        # x86_64-darwin is left out: nixpkgs 26.11 drops it (its release
        # notes); Intel Macs build the agent with cargo (README).
        "aarch64-darwin"
      ];
      perSystem = lib.genAttrs systems (
        system:
        import ./nix {
          inherit
            nixpkgs
            crane
            rust-overlay
            system
            ;
          src = self;
        }
      );
      select = name: lib.mapAttrs (_: outputs: outputs.${name}) perSystem;
    in
    {
      packages = select "packages";
      # services.fluidity-agent for home-manager (a login service on Linux
      # and macOS) and services.fluidity-server for NixOS (a server of your
      # own); README, "Run it all the time".
      homeManagerModules.default = import ./nix/modules/home-manager.nix { packages = self.packages; };
      nixosModules.server = import ./nix/modules/nixos-server.nix { packages = self.packages; };
      apps = select "apps";
      checks = select "checks";
      devShells = select "devShells";
      formatter = select "formatter";
    };
}
