//! `fluidity-server`: the mutual-TLS forward proxy that runs on Fargate.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fluidity::server::{self, ServerArgs, ServerConfig};
use fluidity::{cli, shutdown, telemetry};

/// Forward proxy (HTTP/1.1 and HTTP/2, CONNECT included) behind TLS 1.3 that
/// only accepts clients holding a certificate from your Fluidity CA.
///
/// Usable by the agent or directly by curl:
///   curl --proxy https://HOST:8443 --proxy-cacert ca.crt --proxy-cert client.crt --proxy-key client.key URL
/// Every flag can also be set with the FLUIDITY_* variable shown, or in the YAML
/// file given with --config; flags win over the environment, which wins over the
/// file. Certificates can come as PEM text in FLUIDITY_TLS_{CERT,KEY,CA}_PEM.
/// SIGHUP reloads certificates; SIGTERM drains and exits 0.
///
/// Listens on 0.0.0.0:8443 by default. On Fargate it listens on 443 as user
/// 65532: the task definition sets FLUIDITY_LISTEN=0.0.0.0:443 and the sysctl
/// net.ipv4.ip_unprivileged_port_start=443. Elsewhere a port below that sysctl
/// (1024 by default) is refused until the sysctl is lowered or another port
/// chosen. Exit codes: 2 for a configuration to fix (a listen address the
/// system refuses included), 1 for any other failure.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(flatten)]
    args: ServerArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Exit 0 if the running server's /healthz answers 200, else 1 (the ECS
    /// container health check; the image has no curl)
    Healthcheck {
        /// Give up after this long
        #[arg(long, default_value = "3s")]
        timeout: String,
    },
}

fn main() -> ExitCode {
    let Cli { args, command } = Cli::parse();
    if let Some(Command::Healthcheck { timeout }) = command {
        return healthcheck(&args, &timeout);
    }
    fluidity::install_crypto_provider();
    let config = match ServerConfig::load(&args) {
        Ok(config) => config,
        Err(error) => return cli::config_error("fluidity-server", &error),
    };
    telemetry::init_with(config.log_format, config.log_level.as_deref());
    let result = cli::runtime(config.worker_threads)
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(async { server::run(config, shutdown::on_signal()).await }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => cli::run_error("fluidity-server", &error),
    }
}

fn healthcheck(args: &ServerArgs, timeout: &str) -> ExitCode {
    let timeout = fluidity::config::parse_duration(timeout).unwrap_or(Duration::from_secs(3));
    let addr = match server::config::health_address(args) {
        Ok(Some(addr)) => addr,
        Ok(None) => {
            fluidity::telemetry::to_stderr(format_args!(
                "fluidity-server healthcheck: health_listen is off, nothing to check\n"
            ));
            return ExitCode::FAILURE;
        }
        Err(error) => return cli::config_error("fluidity-server healthcheck", &error),
    };
    let outcome = cli::runtime(1)
        .map_err(|e| e.to_string())
        .and_then(|runtime| runtime.block_on(server::health::check(addr, timeout)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            fluidity::telemetry::to_stderr(format_args!("fluidity-server healthcheck: unhealthy: {error}\n"));
            ExitCode::FAILURE
        }
    }
}
