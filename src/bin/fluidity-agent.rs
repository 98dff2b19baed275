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
    #[command(flatten)]
    args: AgentArgs,
}

fn main() -> ExitCode {
    let Cli { args } = Cli::parse();
    fluidity::install_crypto_provider();
    let config = match AgentConfig::load(&args) {
        Ok(config) => config,
        Err(error) => return cli::config_error("fluidity-agent", &error),
    };
    telemetry::init(config.log_format);
    let result = cli::runtime()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(async { agent::run(config, shutdown::on_signal()).await }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => cli::runtime_error("fluidity-agent", &error),
    }
}
