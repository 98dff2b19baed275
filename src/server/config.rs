//! Server configuration: YAML file, flags and `FLUIDITY_*` environment merged
//! (flag > env > file > default) and validated in one step.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::cloudwatch::MetricsSettings;
use super::dial::Dialer;
use super::egress::{Cidr, EgressPolicy};
use crate::config::{ConfigError, load_yaml, merged_duration, merged_window, size_or};
use crate::telemetry::LogFormat;
use crate::tls::TlsMaterial;
use crate::tls::{RawTls, TlsArgs, TlsSources};

/// Default address: every interface, port 8443, which any user may bind. On
/// Fargate the task definition sets `FLUIDITY_LISTEN=0.0.0.0:443` and the
/// sysctl that lets an unprivileged user bind 443.
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
    pub max_handshakes: Option<u32>,
    pub worker_threads: Option<usize>,
    pub allow_loopback: Option<bool>,
    #[serde(default)]
    pub egress: RawEgress,
    /// Static name → IP entries used before DNS.
    #[serde(default)]
    pub hosts: HashMap<String, String>,
    pub stream_window: Option<String>,
    pub connection_window: Option<String>,
    pub max_header_bytes: Option<String>,
    pub idle_timeout: Option<String>,
    pub health_listen: Option<String>,
    pub emit_metrics: Option<bool>,
    pub metrics_namespace: Option<String>,
    pub metrics_interval: Option<String>,
    pub metrics_endpoint_url: Option<String>,
    pub service_name: Option<String>,
    pub cluster_name: Option<String>,
    pub log_format: Option<LogFormat>,
}

/// The `egress:` section.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEgress {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub allow_ports: Vec<u16>,
    #[serde(default)]
    pub deny_ports: Vec<u16>,
}

/// Command line of `fluidity-server`; every flag also reads a `FLUIDITY_*` variable.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServerArgs {
    /// YAML configuration file (flags and environment override its values)
    #[arg(long, short, env = "FLUIDITY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to accept agents on (a port below net.ipv4.ip_unprivileged_port_start, 1024 by default, needs that sysctl lowered) [YAML: listen; default 0.0.0.0:8443; on Fargate the task sets 443]
    #[arg(long, env = "FLUIDITY_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Give up dialling a target after this long; answered 504 [YAML: dial_timeout; default 10s]
    #[arg(long, env = "FLUIDITY_DIAL_TIMEOUT", value_name = "DURATION")]
    pub dial_timeout: Option<String>,
    /// Drop a TLS handshake that takes longer, and on HTTP/2 a client whose preface takes longer after it [YAML: handshake_timeout; default 10s]
    #[arg(long, env = "FLUIDITY_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    pub handshake_timeout: Option<String>,
    /// On SIGTERM, let in-flight streams finish this long [YAML: drain_timeout; default 25s]
    #[arg(long, env = "FLUIDITY_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// HTTP/2 streams one agent connection may open at once [YAML: max_concurrent_streams; default 1024]
    #[arg(long, env = "FLUIDITY_MAX_CONCURRENT_STREAMS", value_name = "N")]
    pub max_concurrent_streams: Option<u32>,
    /// Connections that may be in their TLS handshake at once; further ones are closed immediately (a few silent clients can fill it for handshake_timeout) [YAML: max_handshakes; default 128]
    #[arg(long, env = "FLUIDITY_MAX_HANDSHAKES", value_name = "N")]
    pub max_handshakes: Option<u32>,
    /// Runtime worker threads; one carried a tunnel at 0.8–0.9 GB/s in the benchmark [YAML: worker_threads; default 1]
    #[arg(long, env = "FLUIDITY_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<usize>,
    /// Allow targets on loopback addresses (local testing only) [YAML: allow_loopback; default false]
    #[arg(long, env = "FLUIDITY_ALLOW_LOOPBACK", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub allow_loopback: Option<bool>,
    /// Extra networks the server may dial despite the defaults, e.g. 127.0.0.0/8 [YAML: egress.allow; repeatable]
    #[arg(long = "egress-allow", env = "FLUIDITY_EGRESS_ALLOW", value_delimiter = ',', value_name = "CIDR")]
    pub egress_allow: Vec<String>,
    /// Networks the server must never dial [YAML: egress.deny; repeatable]
    #[arg(long = "egress-deny", env = "FLUIDITY_EGRESS_DENY", value_delimiter = ',', value_name = "CIDR")]
    pub egress_deny: Vec<String>,
    /// HTTP/2 receive window per stream [YAML: stream_window; default 16MiB]
    #[arg(long, env = "FLUIDITY_STREAM_WINDOW", value_name = "SIZE")]
    pub stream_window: Option<String>,
    /// HTTP/2 receive window per connection [YAML: connection_window; default 32MiB]
    #[arg(long, env = "FLUIDITY_CONNECTION_WINDOW", value_name = "SIZE")]
    pub connection_window: Option<String>,
    /// Largest request header block accepted [YAML: max_header_bytes; default 64KiB]
    #[arg(long, env = "FLUIDITY_MAX_HEADER_BYTES", value_name = "SIZE")]
    pub max_header_bytes: Option<String>,
    /// Close a tunnel after this long without a byte either way [YAML: idle_timeout; default 1h]
    #[arg(long, env = "FLUIDITY_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Health and metrics port (/healthz, /metrics), or "off" [YAML: health_listen; default 127.0.0.1:9090]
    #[arg(long, env = "FLUIDITY_HEALTH_LISTEN", value_name = "ADDR:PORT|off")]
    pub health_listen: Option<String>,
    /// Publish activity metrics to CloudWatch [YAML: emit_metrics; default false]
    #[arg(long, env = "FLUIDITY_EMIT_METRICS", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub emit_metrics: Option<bool>,
    /// CloudWatch namespace [YAML: metrics_namespace; default Fluidity]
    #[arg(long, env = "FLUIDITY_METRICS_NAMESPACE", value_name = "NAME")]
    pub metrics_namespace: Option<String>,
    /// How often to publish [YAML: metrics_interval; default 60s]
    #[arg(long, env = "FLUIDITY_METRICS_INTERVAL", value_name = "DURATION")]
    pub metrics_interval: Option<String>,
    /// CloudWatch endpoint override (VPC endpoint, emulator) [YAML: metrics_endpoint_url]
    #[arg(long, env = "FLUIDITY_METRICS_ENDPOINT_URL", value_name = "URL")]
    pub metrics_endpoint_url: Option<String>,
    /// ServiceName dimension; on ECS read from the task metadata [YAML: service_name]
    #[arg(long, env = "FLUIDITY_SERVICE_NAME", value_name = "NAME")]
    pub service_name: Option<String>,
    /// ClusterName dimension; on ECS read from the task metadata [YAML: cluster_name]
    #[arg(long, env = "FLUIDITY_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// Set by ECS on every task; used to learn the service and cluster names.
    #[arg(long, env = "ECS_CONTAINER_METADATA_URI_V4", hide = true)]
    pub ecs_metadata_uri: Option<String>,
    /// Log line format: text, or json for CloudWatch Logs [YAML: log_format; default text]
    #[arg(long, env = "FLUIDITY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level: error, warn, info, debug or trace, or a filter such as fluidity=debug,h2=warn; wins over
    /// RUST_LOG [default info, or RUST_LOG]
    #[arg(long, env = "FLUIDITY_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// More log: -v is debug, -vv trace (--log-level wins)
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
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
    /// Connections allowed in their TLS handshake at once.
    pub max_handshakes: u32,
    /// Runtime worker threads (see [`crate::config::merged_workers`]).
    pub worker_threads: usize,
    /// Egress rules, static hosts and the dial timeout.
    pub dialer: Dialer,
    pub stream_window: u32,
    pub connection_window: u32,
    pub max_header_bytes: u32,
    pub idle_timeout: Duration,
    /// Where the TLS material came from (re-read on SIGHUP).
    pub tls_sources: TlsSources,
    /// The health and metrics port, unless turned off.
    pub health_listen: Option<SocketAddr>,
    pub metrics: MetricsSettings,
    pub log_format: LogFormat,
    /// `--log-level`/`-v`, checked; `None`: RUST_LOG or info.
    pub log_level: Option<String>,
}

impl ServerConfig {
    /// Reads the file named by `args.config` (if any), merges and validates.
    pub fn load(args: &ServerArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let mut file: RawServerConfig = load_yaml(path)?;
                file.tls.dir = Some(crate::config::directory_of(path));
                file
            }
            None => RawServerConfig::default(),
        };
        Self::from_parts(args, file)
    }

    /// Merges flags/env over the file and validates everything in one step.
    pub fn from_parts(args: &ServerArgs, file: RawServerConfig) -> Result<Self, ConfigError> {
        let listen_text = args.listen.clone().or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
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
        let max_handshakes = args.max_handshakes.or(file.max_handshakes).unwrap_or(128);
        if max_handshakes == 0 {
            return Err(ConfigError::new("max_handshakes", "must be at least 1", "write a number such as 128"));
        }
        let duration = merged_duration;
        let window = merged_window;
        let dial_timeout = duration("dial_timeout", &args.dial_timeout, &file.dial_timeout, 10)?;
        let mut policy = egress_policy(args, &file.egress, listen.port())?;
        if args.allow_loopback.or(file.allow_loopback).unwrap_or(false) {
            policy = policy.allowing_loopback();
        }
        let hosts = static_hosts(&file.hosts)?;
        let health_listen = health_listen(args.health_listen.as_deref().or(file.health_listen.as_deref()))?;
        let metrics = MetricsSettings {
            emit: args.emit_metrics.or(file.emit_metrics).unwrap_or(false),
            namespace: args
                .metrics_namespace
                .clone()
                .or(file.metrics_namespace)
                .unwrap_or_else(|| crate::protocol::metrics::DEFAULT_NAMESPACE.into()),
            interval: duration(
                "metrics_interval",
                &args.metrics_interval,
                &file.metrics_interval,
                crate::protocol::metrics::DEFAULT_INTERVAL_SECS,
            )?,
            service_name: args.service_name.clone().or(file.service_name),
            cluster_name: args.cluster_name.clone().or(file.cluster_name),
            endpoint_url: args.metrics_endpoint_url.clone().or(file.metrics_endpoint_url),
            ecs_metadata_uri: args.ecs_metadata_uri.clone(),
        };
        if metrics.emit && metrics.service_name.is_none() && metrics.ecs_metadata_uri.is_none() {
            return Err(ConfigError::new(
                "service_name",
                "required when emit_metrics is on",
                "set service_name (FLUIDITY_SERVICE_NAME), or run on ECS where the task metadata provides it",
            ));
        }
        Ok(Self {
            health_listen,
            metrics,
            listen,
            dial_timeout,
            handshake_timeout: duration("handshake_timeout", &args.handshake_timeout, &file.handshake_timeout, 10)?,
            drain_timeout: duration("drain_timeout", &args.drain_timeout, &file.drain_timeout, 25)?,
            max_concurrent_streams,
            max_handshakes,
            worker_threads: crate::config::merged_workers(args.worker_threads, file.worker_threads)?,
            dialer: Dialer { policy, hosts, timeout: dial_timeout },
            stream_window: window("stream_window", &args.stream_window, &file.stream_window, 16 << 20)?,
            connection_window: window("connection_window", &args.connection_window, &file.connection_window, 32 << 20)?,
            max_header_bytes: size_or(
                "max_header_bytes",
                args.max_header_bytes.as_deref().or(file.max_header_bytes.as_deref()),
                64 << 10,
                1 << 10,
                16 << 20,
            )? as u32,
            idle_timeout: duration("idle_timeout", &args.idle_timeout, &file.idle_timeout, 3600)?,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            log_level: crate::telemetry::log_filter(args.log_level.as_deref(), args.verbose)?,
            tls: {
                let material = TlsMaterial::load(&sources, "tls")?;
                material.require_purpose(true, &sources, "tls")?;
                material
            },
            tls_sources: sources,
        })
    }
}

fn egress_policy(args: &ServerArgs, file: &RawEgress, own_port: u16) -> Result<EgressPolicy, ConfigError> {
    let cidrs = |key: &str, flags: &[String], yaml: &[String]| -> Result<Vec<Cidr>, ConfigError> {
        let chosen = if flags.is_empty() { yaml } else { flags };
        chosen
            .iter()
            .map(|c| {
                c.parse().map_err(|p: String| ConfigError::new(key, p, "write CIDRs such as 10.0.0.0/8 or fd00::/8"))
            })
            .collect()
    };
    Ok(EgressPolicy {
        allow: cidrs("egress.allow", &args.egress_allow, &file.allow)?,
        deny: cidrs("egress.deny", &args.egress_deny, &file.deny)?,
        allow_ports: file.allow_ports.clone(),
        deny_ports: file.deny_ports.clone(),
        own_ports: vec![own_port],
    })
}

fn static_hosts(raw: &HashMap<String, String>) -> Result<HashMap<String, IpAddr>, ConfigError> {
    raw.iter()
        .map(|(name, ip)| {
            let ip = ip.parse().map_err(|_| {
                ConfigError::new(
                    format!("hosts.{name}"),
                    format!("`{ip}` is not an IP address"),
                    "map names to IPs, e.g. intranet.example: 10.0.0.5",
                )
            })?;
            Ok((super::dial::normalize_name(name), ip))
        })
        .collect()
}

/// Default health and metrics address: loopback only (the ECS health check
/// runs inside the task's network namespace).
pub const DEFAULT_HEALTH_LISTEN: &str = "127.0.0.1:9090";

/// Parses `health_listen`: an address, or `off`.
pub fn health_listen(value: Option<&str>) -> Result<Option<SocketAddr>, ConfigError> {
    let text = value.unwrap_or(DEFAULT_HEALTH_LISTEN).trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        ConfigError::new(
            "health_listen",
            format!("`{text}` is not an address"),
            "write ADDRESS:PORT such as 127.0.0.1:9090, or off",
        )
    })
}

/// The health address from flags, environment and file, without loading
/// anything else (for the `healthcheck` subcommand).
pub fn health_address(args: &ServerArgs) -> Result<Option<SocketAddr>, ConfigError> {
    let file: RawServerConfig = match &args.config {
        Some(path) => load_yaml(path)?,
        None => RawServerConfig::default(),
    };
    health_listen(args.health_listen.as_deref().or(file.health_listen.as_deref()))
}
