//! `fluidity-local`: agent and server together on this machine, no AWS needed.

use std::process::ExitCode;

use clap::Parser;
use fluidity::local::{self, LocalArgs};
use fluidity::{cli, shutdown, telemetry};

/// Runs a complete tunnel on this machine: generates certificates into a private
/// temporary directory, starts the server on a loopback port and the agent on
/// --listen, and serves a small page to try it with. Loopback targets are
/// allowed in this mode only.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(flatten)]
    args: LocalArgs,
}

fn main() -> ExitCode {
    let Cli { args } = Cli::parse();
    fluidity::install_crypto_provider();
    telemetry::init(args.log_format);
    let result = cli::runtime(2)
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(async { local::run(args, shutdown::on_signal()).await }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => cli::runtime_error("fluidity-local", &error),
    }
}
