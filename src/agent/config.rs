//! Agent configuration: YAML file, flags and `FLUIDITY_*` environment merged
//! (flag > env > file > default) and validated in one step.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{ConfigError, RawTls, TlsArgs, TlsSources, duration_or, load_yaml};
use crate::telemetry::LogFormat;
use crate::tls::TlsMaterial;

/// Default local proxy address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default port of the server when `server` gives none.
pub const DEFAULT_SERVER_PORT: u16 = 8443;

/// The agent's YAML file, every key optional.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentConfig {
    pub listen: Option<String>,
    pub server: Option<String>,
    pub server_name: Option<String>,
    pub pool_size: Option<usize>,
    #[serde(default)]
    pub tls: RawTls,
    pub connect_timeout: Option<String>,
    pub drain_timeout: Option<String>,
    pub log_format: Option<LogFormat>,
}

/// Command line of `fluidity-agent`; every flag also reads a `FLUIDITY_*` variable.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct AgentArgs {
    /// YAML configuration file (flags and environment override its values)
    #[arg(long, short, env = "FLUIDITY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Local proxy address; point browsers and curl -x here [YAML: listen; default 127.0.0.1:8080]
    #[arg(long, env = "FLUIDITY_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// The Fluidity server, HOST[:PORT] (port defaults to 8443) [YAML: server; required]
    #[arg(long, env = "FLUIDITY_SERVER", value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// Name the server certificate must carry, whatever address is dialled [YAML: server_name; default fluidity-server]
    #[arg(long, env = "FLUIDITY_SERVER_NAME", value_name = "DNS-NAME")]
    pub server_name: Option<String>,
    /// Number of long-lived TLS connections to the server [YAML: pool_size; default 2]
    #[arg(long, env = "FLUIDITY_POOL_SIZE", value_name = "N")]
    pub pool_size: Option<usize>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Give up connecting to the server after this long [YAML: connect_timeout; default 10s]
    #[arg(long, env = "FLUIDITY_CONNECT_TIMEOUT", value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// On SIGINT/SIGTERM, let open requests and tunnels finish this long [YAML: drain_timeout; default 10s]
    #[arg(long, env = "FLUIDITY_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// Log line format [YAML: log_format; default text]
    #[arg(long, env = "FLUIDITY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// Validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub listen: SocketAddr,
    /// `host:port` of the server, resolved at each connect.
    pub server: String,
    pub server_name: rustls::pki_types::ServerName<'static>,
    pub pool_size: usize,
    pub tls: TlsMaterial,
    pub connect_timeout: Duration,
    pub drain_timeout: Duration,
    pub log_format: LogFormat,
}

impl AgentConfig {
    /// Reads the file named by `args.config` (if any), merges and validates.
    pub fn load(args: &AgentArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => load_yaml(path)?,
            None => RawAgentConfig::default(),
        };
        Self::from_parts(args, file)
    }

    /// Merges flags/env over the file and validates everything in one step.
    pub fn from_parts(args: &AgentArgs, file: RawAgentConfig) -> Result<Self, ConfigError> {
        let listen_text = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = listen_text.parse().map_err(|_| {
            ConfigError::new(
                "listen",
                format!("`{listen_text}` is not an address"),
                "write ADDRESS:PORT, e.g. 127.0.0.1:8080",
            )
        })?;
        let server = parse_server(args.server.clone().or(file.server))?;
        let name_text = args
            .server_name
            .clone()
            .or(file.server_name)
            .unwrap_or_else(|| crate::DEFAULT_SERVER_NAME.into());
        let server_name =
            rustls::pki_types::ServerName::try_from(name_text.clone()).map_err(|_| {
                ConfigError::new(
                    "server_name",
                    format!("`{name_text}` is not a DNS name"),
                    "use the name in the server certificate, e.g. fluidity-server",
                )
            })?;
        let pool_size = args.pool_size.or(file.pool_size).unwrap_or(2);
        if !(1..=64).contains(&pool_size) {
            return Err(ConfigError::new(
                "pool_size",
                format!("{pool_size} is out of range"),
                "use 1 to 64 (2 is plenty)",
            ));
        }
        let sources = TlsSources::resolve(
            &args.tls,
            &file.tls,
            &PathBuf::from("certs"),
            ["client.crt", "client.key", "ca.crt"],
        );
        Ok(Self {
            listen,
            server,
            server_name,
            pool_size,
            connect_timeout: duration_or(
                "connect_timeout",
                args.connect_timeout
                    .as_deref()
                    .or(file.connect_timeout.as_deref()),
                Duration::from_secs(10),
            )?,
            drain_timeout: duration_or(
                "drain_timeout",
                args.drain_timeout
                    .as_deref()
                    .or(file.drain_timeout.as_deref()),
                Duration::from_secs(10),
            )?,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            tls: TlsMaterial::load(&sources, "tls")?,
        })
    }
}

fn parse_server(value: Option<String>) -> Result<String, ConfigError> {
    let fix = "set it to the server's HOST:PORT, e.g. 203.0.113.7:8443, or pass --server";
    let Some(text) = value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    else {
        return Err(ConfigError::new("server", "missing", fix));
    };
    if text.contains("://") || text.contains('/') {
        return Err(ConfigError::new(
            "server",
            format!("`{text}` is a URL, not HOST:PORT"),
            fix,
        ));
    }
    // Bracketed IPv6 with a port, or anything ending in :digits, already has a port.
    let has_port = match text.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        return Ok(text);
    }
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(format!("[{text}]:{DEFAULT_SERVER_PORT}"));
    }
    if text.contains(':') {
        return Err(ConfigError::new(
            "server",
            format!("`{text}` has an invalid port"),
            fix,
        ));
    }
    Ok(format!("{text}:{DEFAULT_SERVER_PORT}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        let cases = [
            ("203.0.113.7:8443", Some("203.0.113.7:8443")),
            ("203.0.113.7", Some("203.0.113.7:8443")),
            ("tunnel.example", Some("tunnel.example:8443")),
            ("[::1]:9000", Some("[::1]:9000")),
            ("::1", Some("[::1]:8443")),
            ("host:99999", None),
            ("https://host", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_server(Some(text.into())).ok().as_deref(),
                want,
                "{text}"
            );
        }
        assert_eq!(parse_server(None).unwrap_err().key, "server");
    }
}
