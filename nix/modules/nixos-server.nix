# NixOS module: a Fluidity server of your own (not on Fargate).
#
#   services.fluidity-server = {
#     enable = true;
#     certificates = { ca = "/var/lib/fluidity/ca.crt"; cert = "/var/lib/fluidity/server.crt"; key = "/var/lib/fluidity/server.key"; };
#     openFirewall = true;
#   };
#
# The certificate files stay outside the Nix store: systemd hands them to
# the service as credentials (LoadCredential), readable by its dynamic user
# only. The service runs without root, binds the port with
# CAP_NET_BIND_SERVICE when it is below 1024, and is sandboxed.
{ packages }:
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.fluidity-server;
  file =
    what:
    lib.mkOption {
      type = lib.types.strMatching "/.+";
      description = "Absolute path of the ${what} (outside the Nix store; fluidity-certs writes it).";
    };
in
{
  options.services.fluidity-server = {
    enable = lib.mkEnableOption "the Fluidity server: a mutual-TLS forward proxy for your agents";
    package = lib.mkOption {
      type = lib.types.package;
      default = packages.${pkgs.stdenv.hostPlatform.system}.server;
      defaultText = lib.literalExpression "fluidity.packages.\${system}.server";
      description = "The fluidity-server package.";
    };
    port = lib.mkOption {
      type = lib.types.port;
      default = 443;
      description = "Port the server listens on (443 passes port allow-lists and proxies that CONNECT only to 443).";
    };
    certificates = {
      ca = file "CA certificate (ca.crt) that signs the agents' certificates";
      cert = file "server certificate (server.crt)";
      key = file "server's private key (server.key)";
    };
    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the port in the firewall.";
    };
    extraArgs = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [
        "--egress-allow"
        "10.0.0.0/8"
      ];
      description = "More fluidity-server flags (fluidity-server --help).";
    };
  };

  config = lib.mkIf cfg.enable {
    systemd.services.fluidity-server = {
      description = "Fluidity server: mutual-TLS forward proxy";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      serviceConfig = {
        ExecStart = lib.escapeShellArgs (
          [
            (lib.getExe cfg.package)
            "--listen"
            "[::]:${toString cfg.port}"
            "--cert"
            "%d/server.crt"
            "--key"
            "%d/server.key"
            "--ca"
            "%d/ca.crt"
          ]
          ++ cfg.extraArgs
        );
        LoadCredential = [
          "ca.crt:${cfg.certificates.ca}"
          "server.crt:${cfg.certificates.cert}"
          "server.key:${cfg.certificates.key}"
        ];
        Restart = "on-failure";
        DynamicUser = true;
        AmbientCapabilities = lib.optional (cfg.port < 1024) "CAP_NET_BIND_SERVICE";
        CapabilityBoundingSet = lib.optional (cfg.port < 1024) "CAP_NET_BIND_SERVICE";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectControlGroups = true;
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
        RestrictNamespaces = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" ];
      };
    };
    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ cfg.port ];
  };
}
