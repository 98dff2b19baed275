# The home-manager and NixOS modules, evaluated with nixpkgs' lib.evalModules
# and stubs for the options they set elsewhere (home-manager's and NixOS's own
# module sets are not inputs): each check fails evaluation (`assert`) when a
# module stops producing what it promises. `nix flake check --no-build`
# evaluates them.
{
  pkgs,
  lib,
  packages,
}:
let
  inherit (pkgs.stdenv.hostPlatform) system isLinux;
  byName = {
    ${system} = packages;
  };
  stub = type: lib.mkOption { inherit type; };
  anything = lib.types.attrsOf lib.types.anything;

  homeManager =
    settings:
    (lib.evalModules {
      modules = [
        (import ./modules/home-manager.nix { packages = byName; })
        {
          options = {
            systemd.user.services = stub anything;
            launchd.agents = stub anything;
            home.homeDirectory = stub lib.types.str;
            assertions = stub (lib.types.listOf lib.types.unspecified);
          };
          config = {
            _module.args.pkgs = pkgs;
            home.homeDirectory = "/home/someone";
            services.fluidity-agent = {
              enable = true;
              inherit settings;
            };
          };
        }
      ];
    }).config;
  good = homeManager {
    lifecycle.api_url = "https://example.execute-api.eu-west-1.amazonaws.com/api";
    lifecycle.api_key_file = "/home/someone/.config/fluidity/api-key";
    tls.key = "/home/someone/.config/fluidity/certs/client.key";
  };
  failed = config: lib.filter (a: !a.assertion) config.assertions;
  agentCommand =
    if isLinux then
      good.systemd.user.services.fluidity-agent.Service.ExecStart
    else
      lib.concatStringsSep " " good.launchd.agents.fluidity-agent.config.ProgramArguments;

  nixos =
    (lib.evalModules {
      modules = [
        (import ./modules/nixos-server.nix { packages = byName; })
        {
          options = {
            systemd.services = stub anything;
            networking.firewall.allowedTCPPorts = stub (lib.types.listOf lib.types.port);
          };
          config = {
            _module.args.pkgs = pkgs;
            services.fluidity-server = {
              enable = true;
              openFirewall = true;
              certificates = {
                ca = "/var/lib/fluidity/ca.crt";
                cert = "/var/lib/fluidity/server.crt";
                key = "/var/lib/fluidity/server.key";
              };
            };
          };
        }
      ];
    }).config;
  server = nixos.systemd.services.fluidity-server.serviceConfig;
in
assert failed good == [ ];
assert lib.hasInfix "fluidity-agent --config /nix/store/" agentCommand;
assert lib.hasSuffix "fluidity-agent.yaml" agentCommand;
assert
  isLinux
  ->
    good.systemd.user.services.fluidity-agent.Service.Restart == "on-failure"
    && good.systemd.user.services.fluidity-agent.Install.WantedBy == [ "default.target" ];
assert
  !isLinux
  ->
    good.launchd.agents.fluidity-agent.config.RunAtLoad
    && good.launchd.agents.fluidity-agent.config.KeepAlive;
# The API key and relative key paths are refused (the store is world-readable).
# The server module is for NixOS, so for Linux.
assert
  failed (homeManager {
    lifecycle.api_key = "secret";
  }) != [ ];
assert
  failed (homeManager {
    tls.key = "certs/client.key";
  }) != [ ];
assert isLinux -> lib.hasInfix "--listen '[::]:443'" server.ExecStart;
assert isLinux -> lib.hasInfix "%d/server.key" server.ExecStart;
assert isLinux -> lib.elem "server.key:/var/lib/fluidity/server.key" server.LoadCredential;
assert isLinux -> server.DynamicUser && server.NoNewPrivileges;
assert isLinux -> server.AmbientCapabilities == [ "CAP_NET_BIND_SERVICE" ];
assert isLinux -> nixos.networking.firewall.allowedTCPPorts == [ 443 ];
pkgs.runCommand "fluidity-module-checks" { } ''
  echo "home-manager: ${agentCommand}" > $out
  echo "nixos: ${if isLinux then server.ExecStart else "(Linux only)"}" >> $out
''
