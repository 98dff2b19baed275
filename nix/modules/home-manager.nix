# home-manager module: the agent as a login service, configured in Nix.
#
#   services.fluidity-agent = {
#     enable = true;
#     settings = {
#       lifecycle.api_url = "https://abc.execute-api.eu-west-1.amazonaws.com/api";
#       lifecycle.api_key_file = "/home/me/.config/fluidity/fluidity-dev-api-key";
#       tls = { cert = "/home/me/.config/fluidity/certs/client.crt"; key = "…/client.key"; ca = "…/ca.crt"; };
#     };
#   };
#
# The settings become the agent's YAML in the Nix store, which every local
# user can read: name key files by absolute path, never put key material or
# the API key itself in them. A systemd user service on Linux, a launchd
# agent on macOS.
{ packages }:
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.fluidity-agent;
  yaml = pkgs.formats.yaml { };
  configFile = yaml.generate "fluidity-agent.yaml" cfg.settings;
  inherit (pkgs.stdenv.hostPlatform) isDarwin isLinux;
  secrets = [
    (cfg.settings.tls.key or null)
    (cfg.settings.lifecycle.api_key_file or null)
  ];
in
{
  options.services.fluidity-agent = {
    enable = lib.mkEnableOption "the Fluidity agent: a local proxy (127.0.0.1:8080) that wakes your Fluidity server and tunnels to it";
    package = lib.mkOption {
      type = lib.types.package;
      default = packages.${pkgs.stdenv.hostPlatform.system}.agent;
      defaultText = lib.literalExpression "fluidity.packages.\${system}.agent";
      description = "The fluidity-agent package.";
    };
    settings = lib.mkOption {
      inherit (yaml) type;
      default = { };
      description = ''
        The agent's configuration, as its YAML file (README, "Configuration
        reference"). It is stored in the world-readable Nix store: give the
        key files by absolute path, never their contents, and no `lifecycle.api_key`.
      '';
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        assertions = [
          {
            assertion = lib.all (p: p == null || lib.hasPrefix "/" (toString p)) secrets;
            message = "services.fluidity-agent.settings: tls.key and lifecycle.api_key_file must be absolute paths (the configuration lives in the Nix store)";
          }
          {
            assertion = !(cfg.settings ? lifecycle && cfg.settings.lifecycle ? api_key);
            message = "services.fluidity-agent.settings.lifecycle.api_key would be world-readable in the Nix store; use lifecycle.api_key_file";
          }
        ];
      }
      (lib.mkIf isLinux {
        systemd.user.services.fluidity-agent = {
          Unit = {
            Description = "Fluidity agent: the local proxy that wakes your Fluidity server and tunnels to it";
            After = [ "network-online.target" ];
            Wants = [ "network-online.target" ];
          };
          Service = {
            Type = "exec";
            ExecStart = "${lib.getExe cfg.package} --config ${configFile}";
            Restart = "on-failure";
            RestartSec = "5s";
            NoNewPrivileges = true;
            ProtectSystem = "strict";
            ProtectHome = "read-only";
            PrivateTmp = true;
          };
          Install.WantedBy = [ "default.target" ];
        };
      })
      (lib.mkIf isDarwin {
        launchd.agents.fluidity-agent = {
          enable = true;
          config = {
            ProgramArguments = [
              (lib.getExe cfg.package)
              "--config"
              "${configFile}"
            ];
            RunAtLoad = true;
            KeepAlive = true;
            ProcessType = "Background";
            StandardOutPath = "${config.home.homeDirectory}/Library/Logs/fluidity-agent.log";
            StandardErrorPath = "${config.home.homeDirectory}/Library/Logs/fluidity-agent.log";
          };
        };
      })
    ]
  );
}
