//! What the thin binaries share: exit codes and one-line error reporting.

use std::process::ExitCode;

use crate::config::{ConfigError, EXIT_CONFIG};

/// Prints a configuration error as one line and returns exit code 2.
pub fn config_error(program: &str, error: &ConfigError) -> ExitCode {
    crate::telemetry::to_stderr(format_args!("{program}: {error}\n"));
    ExitCode::from(EXIT_CONFIG as u8)
}

/// Prints a runtime error (with its context chain on one line) and returns 1.
pub fn runtime_error(program: &str, error: &anyhow::Error) -> ExitCode {
    crate::telemetry::to_stderr(format_args!("{program}: {error:#}\n"));
    ExitCode::FAILURE
}

/// Reports the error that ended a run: a [`ConfigError`] found only while
/// running (e.g. a listen address the system refuses) as a configuration
/// error (exit 2, see [`config_error`]), anything else as a runtime error (exit 1).
pub fn run_error(program: &str, error: &anyhow::Error) -> ExitCode {
    match error.downcast_ref::<ConfigError>() {
        Some(config) => config_error(program, config),
        None => runtime_error(program, error),
    }
}

/// Builds the Tokio runtime every binary uses, with `worker_threads` workers
/// (blocking work such as DNS lookups runs on its own pool besides). One
/// worker, the default, is a current-thread runtime: no work-stealing
/// queues or atomics between the tasks a request passes through (1 KiB
/// keep-alive requests: +5 % at c=1, +13 % at c=64 against a one-worker
/// multi-thread runtime, docs/benchmarks.md).
pub fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if worker_threads == 1 {
        return tokio::runtime::Builder::new_current_thread().enable_all().build();
    }
    tokio::runtime::Builder::new_multi_thread().worker_threads(worker_threads).enable_all().build()
}
