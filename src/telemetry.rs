//! Logging setup: `tracing` to stderr, human-readable or JSON (for CloudWatch Logs).
//!
//! Nothing written to stderr or stdout may stop the process: piped into a
//! `head`, `tee` or `logger` that has exited, or left on a closed terminal,
//! writes fail (EPIPE, EIO) and `eprintln!` would panic, killing the signal
//! handler or a reconnect supervisor. Log lines and messages go through
//! writers that drop what cannot be written.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// A budget for a log line that an attacker can trigger at will (a failed
/// handshake): at most `burst` lines per `window`; the rest are counted, and
/// the next line let through says how many were left out.
#[derive(Debug)]
pub struct LogBudget {
    burst: u32,
    window: Duration,
    /// (window start, lines let through in it, lines left out since the last one let through)
    state: Mutex<(Option<Instant>, u32, u64)>,
}

impl LogBudget {
    pub const fn new(burst: u32, window: Duration) -> Self {
        Self { burst, window, state: Mutex::new((None, 0, 0)) }
    }

    /// `Some(left_out)` when this line may be written, `left_out` being how
    /// many were suppressed before it; `None` when it must be left out.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (start, admitted, left_out) = &mut *state;
        if start.is_none_or(|start| now.duration_since(start) >= self.window) {
            (*start, *admitted) = (Some(now), 0);
        }
        if *admitted < self.burst {
            *admitted += 1;
            Some(std::mem::take(left_out))
        } else {
            *left_out += 1;
            None
        }
    }
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
    init_with(format, None);
}

/// As [`init`], with the level or filter of `--log-level`/`-v` (checked by
/// [`log_filter`]), which wins over `RUST_LOG`.
pub fn init_with(format: LogFormat, level: Option<&str>) {
    let filter = match level.and_then(|l| EnvFilter::try_new(l).ok()) {
        Some(filter) => filter,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(|| LossyStderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The level `--log-level` and `-v` ask for: `-v` is debug, `-vv` trace;
/// a level or a `RUST_LOG`-style filter (`fluidity=debug,h2=warn`) is
/// checked here, so a typo is a configuration error, not silence.
pub fn log_filter(level: Option<&str>, verbose: u8) -> Result<Option<String>, crate::config::ConfigError> {
    let level = match (level, verbose) {
        (Some(level), _) => level.trim().to_string(),
        (None, 0) => return Ok(None),
        (None, 1) => "debug".into(),
        (None, _) => "trace".into(),
    };
    let simple = ["error", "warn", "info", "debug", "trace", "off"].contains(&level.to_ascii_lowercase().as_str());
    if !simple && (level.is_empty() || EnvFilter::try_new(&level).is_err() || !level.contains('=')) {
        return Err(crate::config::ConfigError::new(
            "--log-level",
            format!("`{level}` is not a level"),
            "use error, warn, info, debug or trace, or a filter such as fluidity=debug,h2=warn",
        ));
    }
    Ok(Some(level))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_from_flags() {
        assert_eq!(log_filter(None, 0).unwrap(), None);
        assert_eq!(log_filter(None, 1).unwrap().as_deref(), Some("debug"));
        assert_eq!(log_filter(None, 3).unwrap().as_deref(), Some("trace"));
        assert_eq!(log_filter(Some("WARN"), 2).unwrap().as_deref(), Some("WARN"), "the flag wins over -v");
        assert_eq!(log_filter(Some("fluidity=debug,h2=warn"), 0).unwrap().as_deref(), Some("fluidity=debug,h2=warn"));
        assert_eq!(log_filter(Some("loud"), 0).unwrap_err().key, "--log-level");
        assert!(log_filter(Some(""), 0).is_err());
    }

    #[test]
    fn a_log_budget_lets_a_burst_through_per_window_and_counts_the_rest() {
        let budget = LogBudget::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let first: Vec<_> = (0..10).map(|_| budget.admit_at(t0)).collect();
        assert_eq!(first, [Some(0), Some(0), Some(0), None, None, None, None, None, None, None]);
        // The next window: the first line tells how many were left out.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(budget.admit_at(later), Some(7));
        assert_eq!(budget.admit_at(later), Some(0));
    }
}
