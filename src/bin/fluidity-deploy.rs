//! `fluidity-deploy`: publishes the artifacts and manages the two stacks.

use std::process::ExitCode;

use clap::Parser;
use fluidity::deploy::{self, Cli, Error};

fn main() -> ExitCode {
    let cli = Cli::parse();
    fluidity::install_crypto_provider();
    let runtime = match fluidity::cli::runtime(2) {
        Ok(runtime) => runtime,
        Err(error) => return fluidity::cli::runtime_error("fluidity-deploy", &error.into()),
    };
    match runtime.block_on(deploy::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Config(error)) => fluidity::cli::config_error("fluidity-deploy", &error),
        Err(Error::Failed(error)) => fluidity::cli::runtime_error("fluidity-deploy", &error),
    }
}
