//! `fluidity-agent`: the local HTTP proxy that carries traffic to your server.

use std::process::ExitCode;

use clap::Parser;
use fluidity::agent::{self, AgentArgs, AgentConfig};
use fluidity::{cli, shutdown, telemetry};

/// Local HTTP proxy (127.0.0.1:8080 by default) whose traffic travels to your
/// Fluidity server over mutual TLS 1.3 as HTTP/2 streams.
///
/// Point a browser or `curl -x http://127.0.0.1:8080` at it. Every flag can also
/// be set with the FLUIDITY_* variable shown, or in the YAML file given with
/// --config; flags win over the environment, which wins over the file.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: AgentArgs,
    /// Check the configuration, then really connect: print each step on the
    /// way to the server (upstream proxy and where it was set, its answer,
    /// TLS, the server's identity, HTTP/2) and, with a control API, one status
    /// call; exit 0 when all pass, 1 naming the step that failed, 2 for a bad
    /// configuration.
    #[arg(long, help_heading = "Diagnosis")]
    check: bool,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Ask the running agent how it is (GET /status on its port, from the same
    /// configuration): the server asleep, waking, up or unreachable and why,
    /// its address, connections, requests and bytes, control API calls.
    /// Exit 0 when the server is up, 3 when the agent runs but the server is
    /// not, 1 when no agent answers. `--json` prints the report as is.
    Status {
        /// Print the JSON report
        #[arg(long)]
        json: bool,
    },
    /// Run the agent as a login service with --config PATH: a systemd user
    /// unit on Linux (~/.config/systemd/user/fluidity-agent.service, enabled
    /// and started with systemctl --user), a launchd agent on macOS
    /// (~/Library/LaunchAgents/dev.fluidity.agent.plist, launchctl bootstrap);
    /// without a user service manager it prints the commands to run.
    Service {
        #[arg(value_enum)]
        action: ServiceAction,
        /// The service manager (the machine's own by default)
        #[arg(long, value_enum, hide = true)]
        manager: Option<agent::service::Manager>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ServiceAction {
    /// Write the service for --config and start it
    Install,
    /// Stop and remove it
    Uninstall,
    /// Say whether it is installed and running
    Status,
}

/// `fluidity-agent service …`.
fn service(args: &AgentArgs, action: ServiceAction, manager: Option<agent::service::Manager>) -> ExitCode {
    use agent::service;
    let manager = manager.unwrap_or_else(service::Manager::native);
    let Some(home) = std::env::var_os("HOME").map(std::path::PathBuf::from) else {
        return cli::runtime_error("fluidity-agent service", &anyhow::anyhow!("HOME is not set"));
    };
    let said = match action {
        ServiceAction::Install => install_service(args, manager, &home),
        ServiceAction::Uninstall => service::uninstall(manager, &home),
        ServiceAction::Status => Ok(service::status(manager, &home)),
    };
    match said {
        Ok(lines) => {
            telemetry::to_stdout(format_args!("{}\n", lines.join("\n")));
            ExitCode::SUCCESS
        }
        Err(error) => cli::runtime_error("fluidity-agent service", &error),
    }
}

/// Validates the configuration as the agent would, refuses key files others
/// can read, and installs the service with absolute paths.
fn install_service(
    args: &AgentArgs,
    manager: agent::service::Manager,
    home: &std::path::Path,
) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    let path = args.config.as_ref().context("pass --config PATH: the service runs the agent with that file")?;
    let config = AgentConfig::load(args).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let fluidity::tls::PemSource::File(key) = &config.tls_sources.key {
        agent::service::check_private(key)?;
    }
    let config_path = std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
    let binary = std::env::current_exe().context("finding this program's path")?;
    agent::service::install(manager, home, &binary, &config_path)
}

fn main() -> ExitCode {
    let Cli { command, args, check } = Cli::parse();
    fluidity::install_crypto_provider();
    if let Some(Command::Service { action, manager }) = command {
        return service(&args, action, manager);
    }
    let config = match AgentConfig::load(&args) {
        Ok(config) => config,
        Err(error) => return cli::config_error("fluidity-agent", &error),
    };
    if let Some(Command::Status { json }) = command {
        let result = cli::runtime(1)
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(agent::status::fetch(config.listen)));
        return match result {
            Ok(report) if json => {
                telemetry::to_stdout(format_args!("{report}\n"));
                status_code(&report)
            }
            Ok(report) => {
                telemetry::to_stdout(format_args!("{}", agent::status::describe(&report)));
                status_code(&report)
            }
            Err(error) => cli::runtime_error("fluidity-agent status", &error),
        };
    }
    if check {
        let result =
            cli::runtime(1).map_err(anyhow::Error::from).and_then(|runtime| runtime.block_on(agent::check(config)));
        return match result {
            Ok(agent::Checked::Tunnel) => {
                telemetry::to_stdout(format_args!("check passed: the tunnel to the server works\n"));
                ExitCode::SUCCESS
            }
            Ok(agent::Checked::ApiOnly { state }) => {
                telemetry::to_stdout(format_args!(
                    "check passed up to the control API: the server is {state}, so the tunnel itself was not tried (the agent wakes the server when it starts)\n"
                ));
                ExitCode::SUCCESS
            }
            Err(error) => cli::runtime_error("fluidity-agent --check", &error),
        };
    }
    telemetry::init_with(config.log_format, config.log_level.as_deref());
    let result = cli::runtime(config.worker_threads)
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(async { agent::run(config, shutdown::on_signal()).await }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => cli::runtime_error("fluidity-agent", &error),
    }
}

/// 0 when the server is up, 3 when the agent runs but the server is not.
fn status_code(report: &serde_json::Value) -> ExitCode {
    if report["state"] == "up" { ExitCode::SUCCESS } else { ExitCode::from(3) }
}
