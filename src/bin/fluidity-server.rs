//! `fluidity-server`: the mutual-TLS forward proxy that runs on Fargate.

use std::process::ExitCode;

use clap::Parser;
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
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(flatten)]
    args: ServerArgs,
}

fn main() -> ExitCode {
    let Cli { args } = Cli::parse();
    fluidity::install_crypto_provider();
    let config = match ServerConfig::load(&args) {
        Ok(config) => config,
        Err(error) => return cli::config_error("fluidity-server", &error),
    };
    telemetry::init(config.log_format);
    let result = cli::runtime()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(async { server::run(config, shutdown::on_signal()).await }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => cli::runtime_error("fluidity-server", &error),
    }
}
