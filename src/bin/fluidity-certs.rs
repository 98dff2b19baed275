//! `fluidity-certs`: creates the CA, server and client certificates.

use std::process::ExitCode;

use clap::Parser;
use fluidity::certs::{self, CertOptions};

/// Creates a private CA and the certificates Fluidity needs, without openssl:
/// ca.crt, server.crt + server.key (DNS name fluidity-server plus any --san),
/// client.crt + client.key. ECDSA P-256; keys are written with mode 0600.
/// Existing files are never overwritten unless --force is given.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(flatten)]
    options: CertOptions,
}

fn main() -> ExitCode {
    let Cli { options } = Cli::parse();
    match certs::generate(&options) {
        Ok(paths) => {
            for path in paths {
                fluidity::telemetry::to_stdout(format_args!("wrote {}\n", path.display()));
            }
            fluidity::telemetry::to_stdout(format_args!(
                "keep server.key and client.key private; certs/.gitignore keeps them out of git\n"
            ));
            ExitCode::SUCCESS
        }
        Err(error) => {
            fluidity::telemetry::to_stderr(format_args!("fluidity-certs: {error}\n"));
            ExitCode::from(fluidity::config::EXIT_CONFIG as u8)
        }
    }
}
