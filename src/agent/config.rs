//! Agent configuration: YAML file, flags and `FLUIDITY_*` environment merged
//! (flag > env > file > default) and validated in one step.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{ConfigError, Secret, load_yaml, merged_duration, merged_window, size_or};
use crate::telemetry::LogFormat;
use crate::tls::{RawTls, TlsArgs, TlsMaterial, TlsSources};

/// Default local proxy address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default port of the server when `server` gives none.
pub const DEFAULT_SERVER_PORT: u16 = 8443;
/// Port of a server woken through the control API: fargate.yaml's
/// `ServerPort` default (443, which port allow-lists and proxies pass).
pub const DEFAULT_LIFECYCLE_SERVER_PORT: u16 = 443;

/// The agent's YAML file, every key optional.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentConfig {
    pub listen: Option<String>,
    pub server: Option<String>,
    pub server_name: Option<String>,
    pub pool_size: Option<usize>,
    pub worker_threads: Option<usize>,
    #[serde(default)]
    pub tls: RawTls,
    pub connect_timeout: Option<String>,
    pub drain_timeout: Option<String>,
    pub keepalive_interval: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub request_wait: Option<String>,
    pub reconnect_max_backoff: Option<String>,
    pub stream_window: Option<String>,
    pub connection_window: Option<String>,
    pub max_header_bytes: Option<String>,
    pub idle_timeout: Option<String>,
    pub proxy_auth: Option<Secret>,
    pub allow_open_proxy: Option<bool>,
    pub log_format: Option<LogFormat>,
    pub upstream_proxy: Option<Secret>,
    pub server_sni: Option<String>,
    #[serde(default)]
    pub pac: RawPac,
    #[serde(default)]
    pub lifecycle: Option<RawLifecycle>,
}

/// The `pac:` section: what `/proxy.pac` sends around the tunnel.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPac {
    /// Name suffixes and CIDR blocks sent DIRECT (default: the NO_PROXY entries).
    pub direct: Option<Vec<String>>,
}

/// The `lifecycle:` section: wake the server through the control API.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLifecycle {
    pub api_url: Option<String>,
    pub api_key: Option<Secret>,
    pub api_key_file: Option<std::path::PathBuf>,
    pub wake_timeout: Option<String>,
    pub poll_interval: Option<String>,
    pub kill_on_exit: Option<bool>,
    pub rewake: Option<bool>,
    pub server_port: Option<u16>,
    pub server_host: Option<String>,
}

/// Command line of `fluidity-agent`; every flag also reads a `FLUIDITY_*` variable.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct AgentArgs {
    /// YAML configuration file (flags and environment override its values)
    #[arg(long, short, env = "FLUIDITY_CONFIG", value_name = "PATH", global = true)]
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
    /// Runtime worker threads; one carried a tunnel at 0.8–0.9 GB/s in the benchmark [YAML: worker_threads; default 1]
    #[arg(long, env = "FLUIDITY_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<usize>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Give up connecting to the server after this long [YAML: connect_timeout; default 10s]
    #[arg(long, env = "FLUIDITY_CONNECT_TIMEOUT", value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// On SIGINT/SIGTERM, let open requests and tunnels finish this long [YAML: drain_timeout; default 10s]
    #[arg(long, env = "FLUIDITY_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// Send an HTTP/2 PING this often on each tunnel connection [YAML: keepalive_interval; default 10s]
    #[arg(long, env = "FLUIDITY_KEEPALIVE_INTERVAL", value_name = "DURATION")]
    pub keepalive_interval: Option<String>,
    /// A PING unanswered this long means the connection is dead [YAML: keepalive_timeout; default 10s]
    #[arg(long, env = "FLUIDITY_KEEPALIVE_TIMEOUT", value_name = "DURATION")]
    pub keepalive_timeout: Option<String>,
    /// While the tunnel is down, a request waits this long before a 503; while the server sleeps, wake_timeout longer [YAML: request_wait; default 10s]
    #[arg(long, env = "FLUIDITY_REQUEST_WAIT", value_name = "DURATION")]
    pub request_wait: Option<String>,
    /// Cap of the reconnect backoff (it starts at 100ms and doubles, with jitter) [YAML: reconnect_max_backoff; default 10s]
    #[arg(long, env = "FLUIDITY_RECONNECT_MAX_BACKOFF", value_name = "DURATION")]
    pub reconnect_max_backoff: Option<String>,
    /// Largest HTTP/2 receive window per stream; windows start at 16MiB and grow only while the local reader keeps up over a long round trip [YAML: stream_window; default 64MiB]
    #[arg(long, env = "FLUIDITY_STREAM_WINDOW", value_name = "SIZE")]
    pub stream_window: Option<String>,
    /// Largest HTTP/2 receive window per connection (a stream's window plus 16MiB for the others) [YAML: connection_window; default 80MiB]
    #[arg(long, env = "FLUIDITY_CONNECTION_WINDOW", value_name = "SIZE")]
    pub connection_window: Option<String>,
    /// Largest request or response header block accepted [YAML: max_header_bytes; default 64KiB]
    #[arg(long, env = "FLUIDITY_MAX_HEADER_BYTES", value_name = "SIZE")]
    pub max_header_bytes: Option<String>,
    /// Close a CONNECT or WebSocket tunnel after this long without a byte [YAML: idle_timeout; default 1h]
    #[arg(long, env = "FLUIDITY_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Require proxy Basic authentication with USER:PASSWORD [YAML: proxy_auth]
    #[arg(long, env = "FLUIDITY_PROXY_AUTH", value_name = "USER:PASSWORD", hide_env_values = true)]
    pub proxy_auth: Option<Secret>,
    /// Allow listening on a non-loopback address without proxy_auth [YAML: allow_open_proxy; default false]
    #[arg(long, env = "FLUIDITY_ALLOW_OPEN_PROXY", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub allow_open_proxy: Option<bool>,
    /// Log line format [YAML: log_format; default text]
    #[arg(long, env = "FLUIDITY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level: error, warn, info, debug or trace, or a filter such as fluidity=debug,h2=warn; wins over
    /// RUST_LOG [default info, or RUST_LOG]
    #[arg(long, env = "FLUIDITY_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// More log: -v is debug, -vv trace (--log-level wins)
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(flatten)]
    pub reach: ReachArgs,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
}

/// How the agent gets out of a restrictive network.
#[derive(Debug, Default, Clone, clap::Args)]
#[command(next_help_heading = "Reaching the server (corporate proxies, filtering)")]
pub struct ReachArgs {
    /// Proxy for the tunnel and the control API: http://[USER:PASSWORD@]HOST:PORT (Basic or NTLM; DOMAIN%5Cuser),
    /// socks5://… or socks5h://…; `none` ignores the environment. Unset: HTTPS_PROXY, then ALL_PROXY, with NO_PROXY,
    /// as curl reads them [YAML: upstream_proxy]
    #[arg(long, env = "FLUIDITY_UPSTREAM_PROXY", value_name = "URL|none", hide_env_values = true)]
    pub upstream_proxy: Option<Secret>,
    /// TLS SNI sent to the server: a name, or `none`; the certificate is checked against --server-name either way
    /// [YAML: server_sni; default: none for an IP address, the dialled name for a DNS name]
    #[arg(long, env = "FLUIDITY_SERVER_SNI", value_name = "NAME|none")]
    pub server_sni: Option<String>,
}

/// The SNI the agent sends (verification is against `server_name` regardless).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ServerSni {
    /// None for an IP address, the dialled name for a DNS name (as browsers).
    #[default]
    Auto,
    /// Never send SNI.
    Off,
    /// Always send this name.
    Name(rustls::pki_types::ServerName<'static>),
}

/// Lifecycle flags: with an API URL the agent wakes the server, waits for it
/// and finds its address itself (instead of a fixed --server).
#[derive(Debug, Default, Clone, clap::Args)]
#[command(next_help_heading = "Lifecycle (wake the server on demand)")]
pub struct LifecycleArgs {
    /// Control API base URL (the deploy tool's ApiUrl output); replaces --server [YAML: lifecycle.api_url]
    #[arg(long, env = "FLUIDITY_API_URL", value_name = "URL")]
    pub api_url: Option<String>,
    /// API key of the control API; never logged [YAML: lifecycle.api_key]
    #[arg(long, env = "FLUIDITY_API_KEY", value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,
    /// File holding the API key (mode 0600; fluidity-deploy writes it) [YAML: lifecycle.api_key_file]
    #[arg(long, env = "FLUIDITY_API_KEY_FILE", value_name = "PATH")]
    pub api_key_file: Option<std::path::PathBuf>,
    /// Give up if the server is not running after this long (also how long a request waits for a wake on demand) [YAML: lifecycle.wake_timeout; default 180s]
    #[arg(long, env = "FLUIDITY_WAKE_TIMEOUT", value_name = "DURATION")]
    pub wake_timeout: Option<String>,
    /// Shortest pause between control API calls; unchanged answers double it up to 60× [YAML: lifecycle.poll_interval; default 5s]
    #[arg(long, env = "FLUIDITY_POLL_INTERVAL", value_name = "DURATION")]
    pub poll_interval: Option<String>,
    /// Stop the server (POST /kill) when the agent exits [YAML: lifecycle.kill_on_exit; default true]
    #[arg(long, env = "FLUIDITY_KILL_ON_EXIT", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub kill_on_exit: Option<bool>,
    /// After the server was put to sleep (idle, nightly stop), wake it on the next client request [YAML: lifecycle.rewake; default true]
    #[arg(long, env = "FLUIDITY_REWAKE", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub rewake: Option<bool>,
    /// Port the woken server listens on (the stack's ServerPort) [YAML: lifecycle.server_port; default 443]
    #[arg(long, env = "FLUIDITY_SERVER_PORT", value_name = "PORT")]
    pub server_port: Option<u16>,
    /// The server's DNS name (the stack's ServerDomainName): sent as SNI to the task's IP, which the agent
    /// dials as the control API reports it [YAML: lifecycle.server_host; default: no SNI]
    #[arg(long, env = "FLUIDITY_SERVER_HOST", value_name = "NAME")]
    pub server_host: Option<String>,
}

/// Validated lifecycle settings.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// Base URL without a trailing slash.
    pub api_url: String,
    pub api_key: Secret,
    /// Where the key came from, for error messages (never the key itself).
    pub key_source: String,
    pub wake_timeout: Duration,
    pub poll_interval: Duration,
    pub kill_on_exit: bool,
    pub rewake: bool,
    pub server_port: u16,
    /// The server's DNS name, sent as SNI (the IP is dialled).
    pub server_host: Option<String>,
}

/// How the tunnel connections behave.
#[derive(Debug, Clone)]
pub struct TunnelSettings {
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub request_wait: Duration,
    pub reconnect_base: Duration,
    pub reconnect_max: Duration,
    pub stream_window: u32,
    pub connection_window: u32,
    pub max_header_bytes: u32,
}

/// Validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub listen: SocketAddr,
    /// `host:port` of the server, resolved at each connect.
    pub server: String,
    pub server_name: rustls::pki_types::ServerName<'static>,
    pub pool_size: usize,
    /// Runtime worker threads (see [`crate::config::merged_workers`]).
    pub worker_threads: usize,
    pub tls: TlsMaterial,
    /// Where the TLS material came from (re-read on SIGHUP).
    pub tls_sources: TlsSources,
    pub tunnel: TunnelSettings,
    pub drain_timeout: Duration,
    pub idle_timeout: Duration,
    /// `user:password` required in `Proxy-Authorization`, if set.
    pub proxy_auth: Option<Secret>,
    pub log_format: LogFormat,
    /// `--log-level`/`-v`, checked; `None`: RUST_LOG or info.
    pub log_level: Option<String>,
    /// Wake-on-demand settings; `None` means a fixed `server` (manual mode).
    pub lifecycle: Option<LifecycleConfig>,
    /// Direct or through which proxy the server and the control API are reached.
    pub upstream: crate::upstream::Upstream,
    pub server_sni: ServerSni,
    /// Name suffixes and CIDR blocks that `/proxy.pac` sends DIRECT.
    pub pac_direct: Vec<String>,
}

impl AgentConfig {
    /// Reads the file named by `args.config` (if any), merges and validates.
    pub fn load(args: &AgentArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let mut file: RawAgentConfig = load_yaml(path)?;
                let dir = crate::config::directory_of(path);
                if let Some(lifecycle) = file.lifecycle.as_mut() {
                    lifecycle.api_key_file = lifecycle.api_key_file.take().map(|key| dir.join(key));
                }
                file.tls.dir = Some(dir);
                file
            }
            None => RawAgentConfig::default(),
        };
        Self::from_parts(args, file)
    }

    /// Merges flags/env over the file and validates everything in one step.
    pub fn from_parts(args: &AgentArgs, file: RawAgentConfig) -> Result<Self, ConfigError> {
        Self::from_parts_with_env(args, file, &|name| std::env::var(name).ok())
    }

    /// As [`Self::from_parts`], reading proxy variables through `env` (tests pass a map).
    pub fn from_parts_with_env(
        args: &AgentArgs,
        file: RawAgentConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let listen_text = args.listen.clone().or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = local_address(&listen_text).ok_or_else(|| {
            ConfigError::new(
                "listen",
                format!("`{listen_text}` is not an address"),
                "write ADDRESS:PORT, e.g. 127.0.0.1:8080 or localhost:8080",
            )
        })?;
        let upstream = reach(args, file.upstream_proxy.as_ref().map(Secret::expose), listen, env)?;
        let lifecycle = lifecycle(&args.lifecycle, file.lifecycle.unwrap_or_default(), args.config.as_deref())?;
        let server_text = args.server.clone().or(file.server);
        let server = match (&lifecycle, server_text) {
            (None, text) => parse_server(text)?,
            (Some(_), None) => String::new(), // found through the control API
            (Some(_), Some(text)) => {
                return Err(ConfigError::new(
                    "server",
                    format!("`{text}` is set together with lifecycle.api_url"),
                    "use one: a fixed server, or the control API that wakes it",
                ));
            }
        };
        let name_text =
            args.server_name.clone().or(file.server_name).unwrap_or_else(|| crate::DEFAULT_SERVER_NAME.into());
        let server_name = rustls::pki_types::ServerName::try_from(name_text.clone()).map_err(|_| {
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
        let sources =
            TlsSources::resolve(&args.tls, &file.tls, &PathBuf::from("certs"), ["client.crt", "client.key", "ca.crt"]);
        let duration = merged_duration;
        let window = merged_window;
        let tunnel = TunnelSettings {
            connect_timeout: duration("connect_timeout", &args.connect_timeout, &file.connect_timeout, 10)?,
            keepalive_interval: duration("keepalive_interval", &args.keepalive_interval, &file.keepalive_interval, 10)?,
            keepalive_timeout: duration("keepalive_timeout", &args.keepalive_timeout, &file.keepalive_timeout, 10)?,
            request_wait: duration("request_wait", &args.request_wait, &file.request_wait, 10)?,
            reconnect_base: Duration::from_millis(100),
            reconnect_max: duration(
                "reconnect_max_backoff",
                &args.reconnect_max_backoff,
                &file.reconnect_max_backoff,
                10,
            )?,
            // The most the receive windows may grow to while readers keep up
            // over a long path (they start at 16 MiB per stream; see
            // agent::http2::window), and so the most a stalled local reader
            // can leave buffered here: docs/protocol.md has the worst case.
            stream_window: window("stream_window", &args.stream_window, &file.stream_window, 64 << 20)?,
            connection_window: window("connection_window", &args.connection_window, &file.connection_window, 80 << 20)?,
            max_header_bytes: size_or(
                "max_header_bytes",
                args.max_header_bytes.as_deref().or(file.max_header_bytes.as_deref()),
                64 << 10,
                1 << 10,
                16 << 20,
            )? as u32,
        };
        let proxy_auth = args.proxy_auth.clone().or(file.proxy_auth);
        if let Some(auth) = &proxy_auth
            && !auth.expose().split_once(':').is_some_and(|(user, password)| !user.is_empty() && !password.is_empty())
        {
            return Err(ConfigError::new(
                "proxy_auth",
                "must be USER:PASSWORD with both parts non-empty",
                "write it as user:password",
            ));
        }
        let allow_open = args.allow_open_proxy.or(file.allow_open_proxy).unwrap_or(false);
        if !listen.ip().is_loopback() && proxy_auth.is_none() && !allow_open {
            return Err(ConfigError::new(
                "listen",
                format!("{listen} is reachable from other machines and proxy authentication is off"),
                "set proxy_auth (USER:PASSWORD, or FLUIDITY_PROXY_AUTH) or pass --allow-open-proxy to run an open proxy on purpose",
            ));
        }
        let mut server_sni = server_sni(args.reach.server_sni.as_deref().or(file.server_sni.as_deref()))?;
        // The server's name is sent as SNI to the task's IP (unless server_sni says otherwise).
        if let (ServerSni::Auto, Some(host)) = (&server_sni, lifecycle.as_ref().and_then(|l| l.server_host.clone())) {
            // Validated as a DNS name by `server_host`.
            server_sni = rustls::pki_types::ServerName::try_from(host).map_or(ServerSni::Auto, ServerSni::Name);
        }
        let pac_direct = match file.pac.direct {
            Some(list) => {
                if let Some(bad) = list.iter().find(|e| !super::pac::is_valid_entry(e)) {
                    return Err(ConfigError::new(
                        "pac.direct",
                        format!("`{bad}` is neither a name suffix nor an IPv4 CIDR block"),
                        "write entries such as corp.example, .intranet, *.corp.example or 10.0.0.0/8",
                    ));
                }
                list
            }
            None => crate::upstream::no_proxy_list(env)
                .map(|(list, _)| list)
                .map(|v| v.split(',').map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect())
                .unwrap_or_default(),
        };
        Ok(Self {
            upstream,
            server_sni,
            pac_direct,
            listen,
            server,
            server_name,
            pool_size,
            worker_threads: crate::config::merged_workers(args.worker_threads, file.worker_threads)?,
            tunnel,
            drain_timeout: duration("drain_timeout", &args.drain_timeout, &file.drain_timeout, 10)?,
            idle_timeout: duration("idle_timeout", &args.idle_timeout, &file.idle_timeout, 3600)?,
            proxy_auth,
            lifecycle,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            log_level: crate::telemetry::log_filter(args.log_level.as_deref(), args.verbose)?,
            tls: {
                let material = TlsMaterial::load(&sources, "tls")?;
                material.require_purpose(false, &sources, "tls")?;
                material
            },
            tls_sources: sources,
        })
    }
}

/// The upstream proxy setting (flag or variable, else YAML, else the
/// environment) resolved into a per-destination choice.
fn reach(
    args: &AgentArgs,
    file: Option<&str>,
    listen: SocketAddr,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<crate::upstream::Upstream, ConfigError> {
    use crate::upstream::ProxySetting;
    let from_env = env("FLUIDITY_UPSTREAM_PROXY");
    let (text, source) = match (args.reach.upstream_proxy.as_ref().map(Secret::expose), file) {
        (Some(text), _) if from_env.as_deref() == Some(text) => (Some(text), "FLUIDITY_UPSTREAM_PROXY"),
        (Some(text), _) => (Some(text), "--upstream-proxy"),
        (None, Some(text)) => (Some(text), "upstream_proxy in the config file"),
        (None, None) => (None, ""),
    };
    let setting = match text.map(|t| t.trim()) {
        None => ProxySetting::FromEnvironment,
        Some(t) if t.eq_ignore_ascii_case("none") => ProxySetting::Direct,
        Some(t) => ProxySetting::Url { url: Secret::new(t), source: source.to_string() },
    };
    crate::upstream::Upstream::resolve(&setting, env, &[listen]).map_err(|problem| {
        ConfigError::new(
            "upstream_proxy",
            problem,
            "write http://[USER:PASSWORD@]HOST:PORT, socks5h://HOST:PORT or none (percent-encode a \\ as %5C)",
        )
    })
}

fn server_sni(text: Option<&str>) -> Result<ServerSni, ConfigError> {
    let Some(text) = text.map(str::trim) else { return Ok(ServerSni::Auto) };
    if text.eq_ignore_ascii_case("none") {
        return Ok(ServerSni::Off);
    }
    match rustls::pki_types::ServerName::try_from(text.to_string()) {
        Ok(name @ rustls::pki_types::ServerName::DnsName(_)) => Ok(ServerSni::Name(name)),
        Ok(_) => Err(ConfigError::new(
            "server_sni",
            format!("`{text}` is an IP address, which TLS cannot send as SNI (it carries names only)"),
            "write a DNS name, or none to send no SNI",
        )),
        Err(_) => {
            Err(ConfigError::new("server_sni", format!("`{text}` is not a DNS name"), "write a DNS name or none"))
        }
    }
}

/// `ADDRESS:PORT`, or `localhost:PORT` (127.0.0.1: the proxy listens on
/// one address, and localhost is looked up by nothing but this).
fn local_address(text: &str) -> Option<SocketAddr> {
    match text.trim().rsplit_once(':') {
        Some((host, port)) if host.eq_ignore_ascii_case("localhost") => {
            Some(SocketAddr::from(([127, 0, 0, 1], port.parse().ok()?)))
        }
        _ => text.trim().parse().ok(),
    }
}

/// Validates the lifecycle settings; `None` when no API URL is given.
fn lifecycle(
    args: &LifecycleArgs,
    file: RawLifecycle,
    config_path: Option<&std::path::Path>,
) -> Result<Option<LifecycleConfig>, ConfigError> {
    let Some(url) = args.api_url.clone().or(file.api_url) else {
        return Ok(None);
    };
    let api_url = parse_api_url(&url)?;
    let file_name = config_path.map(|p| p.display().to_string()).unwrap_or_else(|| "the config file".into());
    // Flag or environment before the file, and within each the key itself
    // before a key file.
    let (api_key, key_source) = if let Some(key) = &args.api_key {
        let from_env = std::env::var("FLUIDITY_API_KEY").is_ok_and(|v| v == key.expose());
        (key.clone(), if from_env { "FLUIDITY_API_KEY" } else { "--api-key" }.to_string())
    } else if let Some(path) = &args.api_key_file {
        (read_key_file(path)?, path.display().to_string())
    } else if let Some(key) = file.api_key {
        (key, format!("lifecycle.api_key in {file_name}"))
    } else if let Some(path) = &file.api_key_file {
        (read_key_file(path)?, path.display().to_string())
    } else {
        return Err(ConfigError::new(
            "lifecycle.api_key",
            "missing",
            "set FLUIDITY_API_KEY (or lifecycle.api_key, or lifecycle.api_key_file) to the key of the deployed API",
        ));
    };
    if api_key.expose().trim().is_empty() {
        return Err(ConfigError::new("lifecycle.api_key", format!("empty (from {key_source})"), "set the API key"));
    }
    let duration = merged_duration;
    let poll_interval = duration("lifecycle.poll_interval", &args.poll_interval, &file.poll_interval, 5)?;
    Ok(Some(LifecycleConfig {
        api_url,
        api_key,
        key_source,
        wake_timeout: duration("lifecycle.wake_timeout", &args.wake_timeout, &file.wake_timeout, 180)?,
        poll_interval,
        kill_on_exit: args.kill_on_exit.or(file.kill_on_exit).unwrap_or(true),
        rewake: args.rewake.or(file.rewake).unwrap_or(true),
        server_port: args.server_port.or(file.server_port).unwrap_or(DEFAULT_LIFECYCLE_SERVER_PORT),
        server_host: server_host(args.server_host.clone().or(file.server_host))?,
    }))
}

/// `lifecycle.server_host`: a DNS name (the certificate is still checked
/// against `server_name`; the name only finds the server).
fn server_host(text: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(text) = text.map(|t| t.trim().trim_end_matches('.').to_ascii_lowercase()).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let is_name =
        matches!(rustls::pki_types::ServerName::try_from(text.as_str()), Ok(rustls::pki_types::ServerName::DnsName(_)));
    if !is_name || text.contains(':') {
        let problem = format!("`{text}` is not a DNS name");
        return Err(ConfigError::new(
            "lifecycle.server_host",
            problem,
            "write a name such as tunnel.example.com, without a port",
        ));
    }
    Ok(Some(text))
}

/// The API key in `path`: one line, readable by its owner only (like an
/// SSH key, a key file others can read is refused rather than trusted).
fn read_key_file(path: &std::path::Path) -> Result<Secret, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let key = "lifecycle.api_key_file";
    let shown = path.display();
    let metadata = std::fs::metadata(path).map_err(|e| {
        ConfigError::new(key, format!("cannot read {shown}: {e}"), "run fluidity-deploy deploy, which writes it")
    })?;
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(ConfigError::new(
            key,
            format!("{shown} is readable by other users (mode {:o})", metadata.permissions().mode() & 0o777),
            format!("chmod 600 {shown}"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(key, format!("cannot read {shown}: {e}"), "run fluidity-deploy deploy, which writes it")
    })?;
    let value = text.trim();
    if value.contains(['\n', '\r']) {
        return Err(ConfigError::new(key, format!("{shown} holds more than one line"), "keep only the key in it"));
    }
    Ok(Secret::new(value))
}

/// An `https://` URL, or `http://` to this machine only (the key must not
/// cross a network in clear text).
fn parse_api_url(text: &str) -> Result<String, ConfigError> {
    let fix = "use the ApiUrl output of the Lambda stack, e.g. https://abc123.execute-api.eu-west-1.amazonaws.com/api";
    let uri: http::Uri = text
        .trim()
        .parse()
        .map_err(|_| ConfigError::new("lifecycle.api_url", format!("`{text}` is not a URL"), fix))?;
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => {}
        Some("http") if loopback => {}
        Some("http") => {
            return Err(ConfigError::new(
                "lifecycle.api_url",
                format!("`{text}` is plain http; the API key would travel unencrypted"),
                "use the https:// URL",
            ));
        }
        _ => return Err(ConfigError::new("lifecycle.api_url", format!("`{text}` is not an http(s) URL"), fix)),
    }
    Ok(text.trim().trim_end_matches('/').to_string())
}

fn parse_server(value: Option<String>) -> Result<String, ConfigError> {
    let fix = "set it to the server's HOST:PORT, e.g. 203.0.113.7:8443, or pass --server";
    let Some(text) = value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) else {
        return Err(ConfigError::new("server", "missing", fix));
    };
    if text.contains("://") || text.contains('/') {
        return Err(ConfigError::new("server", format!("`{text}` is a URL, not HOST:PORT"), fix));
    }
    // Bracketed IPv6 with a port, or anything ending in :digits, already has a port.
    let has_port = match text.rsplit_once(':') {
        Some((host, port)) => port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']')),
        None => false,
    };
    if has_port {
        return Ok(text);
    }
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(format!("[{text}]:{DEFAULT_SERVER_PORT}"));
    }
    if text.contains(':') {
        return Err(ConfigError::new("server", format!("`{text}` has an invalid port"), fix));
    }
    Ok(format!("{text}:{DEFAULT_SERVER_PORT}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_is_a_listen_address() {
        assert_eq!(local_address("localhost:8080"), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(local_address("LocalHost:0"), Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(local_address("[::1]:8080"), Some("[::1]:8080".parse().unwrap()));
        assert_eq!(local_address("localhost:http"), None);
        assert_eq!(local_address("example.com:8080"), None);
    }

    /// The server's name goes in SNI to the task's IP, unless `server_sni` says otherwise.
    #[test]
    fn the_server_host_is_sent_as_sni() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::certs::CertOptions {
            dir: dir.path().into(),
            sans: vec![],
            client_name: "agent".into(),
            days: 1,
            force: false,
        };
        crate::certs::generate(&options).unwrap();
        let tls = crate::tls::TlsArgs {
            cert: Some(dir.path().join("client.crt")),
            key: Some(dir.path().join("client.key")),
            ca: Some(dir.path().join("ca.crt")),
            ..Default::default()
        };
        let parse = |host: Option<&str>, sni: Option<&str>| {
            let lifecycle = LifecycleArgs {
                api_url: Some("https://api.example/prod".into()),
                api_key: Some(Secret::new("k")),
                server_host: host.map(Into::into),
                ..Default::default()
            };
            let reach = ReachArgs { server_sni: sni.map(Into::into), ..Default::default() };
            let args = AgentArgs { lifecycle, reach, tls: tls.clone(), ..Default::default() };
            AgentConfig::from_parts(&args, RawAgentConfig::default()).unwrap().server_sni
        };
        let name = |n: &str| ServerSni::Name(rustls::pki_types::ServerName::try_from(n.to_string()).unwrap());
        let host = Some("tunnel.example.com");
        assert_eq!(parse(None, None), ServerSni::Auto);
        assert_eq!(parse(host, None), name("tunnel.example.com"));
        assert_eq!(parse(host, Some("none")), ServerSni::Off);
        assert_eq!(parse(host, Some("cdn.example")), name("cdn.example"));
    }

    #[test]
    fn a_key_file_flag_beats_the_files_key_and_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("api-key");
        std::fs::write(&key_file, "from-the-key-file\n").unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let args = LifecycleArgs { api_key_file: Some(key_file.clone()), ..LifecycleArgs::default() };
        let file = RawLifecycle {
            api_url: Some("https://abc.example/api".into()),
            api_key: Some(Secret::new("from-the-yaml")),
            ..RawLifecycle::default()
        };
        let config = lifecycle(&args, file.clone(), None).unwrap().unwrap();
        assert_eq!(config.api_key.expose(), "from-the-key-file");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let refused = lifecycle(&args, file.clone(), None).unwrap_err();
        assert!(refused.to_string().contains("chmod 600"), "{refused}");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&key_file, "one\ntwo\n").unwrap();
        assert!(lifecycle(&args, file, None).unwrap_err().to_string().contains("more than one line"));
    }

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
            assert_eq!(parse_server(Some(text.into())).ok().as_deref(), want, "{text}");
        }
        assert_eq!(parse_server(None).unwrap_err().key, "server");
    }

    #[test]
    fn lifecycle_settings() {
        let args = |url: &str| LifecycleArgs { api_url: Some(url.into()), ..Default::default() };
        let file = |key: Option<&str>| RawLifecycle { api_key: key.map(Secret::new), ..Default::default() };
        let path = Some(std::path::Path::new("agent.yaml"));

        let ok = lifecycle(&args("https://api.example/prod/"), file(Some("k")), path).unwrap().unwrap();
        assert_eq!(ok.api_url, "https://api.example/prod");
        assert_eq!(ok.key_source, "lifecycle.api_key in agent.yaml");
        assert_eq!((ok.wake_timeout, ok.poll_interval), (Duration::from_secs(180), Duration::from_secs(5)));
        assert!(ok.kill_on_exit && ok.rewake);
        assert_eq!(ok.server_port, 443, "fargate.yaml's ServerPort default");
        assert_eq!(ok.server_host, None);
        let named = |host: &str| {
            let args = LifecycleArgs { server_host: Some(host.into()), ..args("https://api.example/prod/") };
            lifecycle(&args, file(Some("k")), path)
        };
        assert_eq!(named("Tunnel.Example.com.").unwrap().unwrap().server_host.as_deref(), Some("tunnel.example.com"));
        assert_eq!(named("203.0.113.7").unwrap_err().key, "lifecycle.server_host");
        assert_eq!(named("tunnel.example.com:443").unwrap_err().key, "lifecycle.server_host");
        assert!(format!("{ok:?}").contains("<redacted>") && !format!("{ok:?}").contains("\"k\""));

        assert!(lifecycle(&args("http://127.0.0.1:9000"), file(Some("k")), path).is_ok());
        let plain = lifecycle(&args("http://api.example/prod"), file(Some("k")), path).unwrap_err();
        assert!(plain.to_string().contains("unencrypted"), "{plain}");
        let missing = lifecycle(&args("https://api.example"), file(None), path).unwrap_err();
        assert_eq!(missing.key, "lifecycle.api_key");
        assert!(lifecycle(&args("ftp://api.example"), file(Some("k")), path).is_err());
        assert!(lifecycle(&LifecycleArgs::default(), file(Some("k")), path).unwrap().is_none());
    }
}
