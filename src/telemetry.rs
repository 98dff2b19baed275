//! Logging setup: `tracing` to stderr, human-readable or JSON (for CloudWatch Logs).
//!
//! Nothing written to stderr or stdout may stop the process: piped into a
//! `head`, `tee` or `logger` that has exited, or left on a closed terminal,
//! writes fail (EPIPE, EIO) and `eprintln!` would panic, killing the signal
//! handler or a reconnect supervisor. Log lines and messages go through
//! writers that drop what cannot be written.

use std::io::Write;

use tracing_subscriber::EnvFilter;

/// Stderr for the log subscriber: a line that cannot be written is dropped
/// (and reported nowhere, so the subscriber never falls back to `eprintln!`).
#[derive(Clone, Copy, Debug, Default)]
pub struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Writes to stderr; a failure (closed pipe or terminal) is ignored.
pub fn to_stderr(text: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr().write_fmt(text);
}

/// Writes to stdout; a failure (closed pipe) is ignored.
pub fn to_stdout(text: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout();
    let _ = out.write_fmt(text);
    let _ = out.flush();
}

/// Output format of the log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// Installs the global subscriber. `RUST_LOG` overrides the default level (`info`).
/// Calling it twice is harmless (the second call does nothing).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(|| LossyStderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
