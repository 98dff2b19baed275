//! Server configuration: YAML file, flags and `FLUIDITY_*` environment merged
//! (flag > env > file > default) and validated in one step.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{ConfigError, RawTls, TlsArgs, TlsSources, duration_or, load_yaml};
use crate::telemetry::LogFormat;
use crate::tls::TlsMaterial;

/// Default address: every interface, port 8443.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";

/// The server's YAML file, every key optional.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerConfig {
    pub listen: Option<String>,
    #[serde(default)]
    pub tls: RawTls,
    pub dial_timeout: Option<String>,
    pub handshake_timeout: Option<String>,
    pub drain_timeout: Option<String>,
    pub max_concurrent_streams: Option<u32>,
    pub allow_loopback: Option<bool>,
    pub log_format: Option<LogFormat>,
}

/// Command line of `fluidity-server`; every flag also reads a `FLUIDITY_*` variable.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServerArgs {
    /// YAML configuration file (flags and environment override its values)
    #[arg(long, short, env = "FLUIDITY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to accept agents on [YAML: listen; default 0.0.0.0:8443]
    #[arg(long, env = "FLUIDITY_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Give up dialling a target after this long; answered 504 [YAML: dial_timeout; default 10s]
    #[arg(long, env = "FLUIDITY_DIAL_TIMEOUT", value_name = "DURATION")]
    pub dial_timeout: Option<String>,
    /// Drop a TLS handshake that takes longer [YAML: handshake_timeout; default 10s]
    #[arg(long, env = "FLUIDITY_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    pub handshake_timeout: Option<String>,
    /// On SIGTERM, let in-flight streams finish this long [YAML: drain_timeout; default 25s]
    #[arg(long, env = "FLUIDITY_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// HTTP/2 streams one agent connection may open at once [YAML: max_concurrent_streams; default 1024]
    #[arg(long, env = "FLUIDITY_MAX_CONCURRENT_STREAMS", value_name = "N")]
    pub max_concurrent_streams: Option<u32>,
    /// Allow targets on loopback addresses (local testing only) [YAML: allow_loopback; default false]
    #[arg(long, env = "FLUIDITY_ALLOW_LOOPBACK", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub allow_loopback: Option<bool>,
    /// Log line format: text, or json for CloudWatch Logs [YAML: log_format; default text]
    #[arg(long, env = "FLUIDITY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// Validated server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls: TlsMaterial,
    pub dial_timeout: Duration,
    pub handshake_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_concurrent_streams: u32,
    pub allow_loopback: bool,
    pub log_format: LogFormat,
}

impl ServerConfig {
    /// Reads the file named by `args.config` (if any), merges and validates.
    pub fn load(args: &ServerArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => load_yaml(path)?,
            None => RawServerConfig::default(),
        };
        Self::from_parts(args, file)
    }

    /// Merges flags/env over the file and validates everything in one step.
    pub fn from_parts(args: &ServerArgs, file: RawServerConfig) -> Result<Self, ConfigError> {
        let listen_text = args.listen.clone().or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = listen_text.parse().map_err(|_| {
            ConfigError::new(
                "listen",
                format!("`{listen_text}` is not an address"),
                "write ADDRESS:PORT, e.g. 0.0.0.0:8443",
            )
        })?;
        let sources =
            TlsSources::resolve(&args.tls, &file.tls, &PathBuf::from("certs"), ["server.crt", "server.key", "ca.crt"]);
        let max_concurrent_streams = args.max_concurrent_streams.or(file.max_concurrent_streams).unwrap_or(1024);
        if max_concurrent_streams == 0 {
            return Err(ConfigError::new(
                "max_concurrent_streams",
                "must be at least 1",
                "write a number such as 1024",
            ));
        }
        Ok(Self {
            listen,
            dial_timeout: duration_or(
                "dial_timeout",
                args.dial_timeout.as_deref().or(file.dial_timeout.as_deref()),
                Duration::from_secs(10),
            )?,
            handshake_timeout: duration_or(
                "handshake_timeout",
                args.handshake_timeout.as_deref().or(file.handshake_timeout.as_deref()),
                Duration::from_secs(10),
            )?,
            drain_timeout: duration_or(
                "drain_timeout",
                args.drain_timeout.as_deref().or(file.drain_timeout.as_deref()),
                Duration::from_secs(25),
            )?,
            max_concurrent_streams,
            allow_loopback: args.allow_loopback.or(file.allow_loopback).unwrap_or(false),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            tls: TlsMaterial::load(&sources, "tls")?,
        })
    }
}
