//! The Fluidity server: a standard HTTP forward proxy behind mutual TLS 1.3.
//!
//! [`Server::bind`] opens the listener; [`Server::run`] accepts until the
//! shutdown token fires, then drains. Each accepted connection is handled by
//! `listener::serve_connection` (TLS handshake, HTTP/1.1 or HTTP/2 by ALPN);
//! each request by `proxy::Proxy` (absolute-form forwarding and `CONNECT`).

mod aws;
pub mod cloudwatch;
pub mod config;
pub mod dial;
pub mod egress;
pub mod health;
mod listener;
mod origins;
mod proxy;
pub mod stats;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{ServerArgs, ServerConfig};
pub use stats::Stats;

use crate::config::ConfigError;

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    health: Option<TcpListener>,
    config: Arc<ServerConfig>,
    stats: Arc<Stats>,
    cloudwatch: Option<cloudwatch::CloudWatch>,
}

impl Server {
    /// Binds the listening socket and builds the TLS configuration.
    pub async fn bind(mut config: ServerConfig) -> anyhow::Result<Self> {
        let listener = listen("listen", config.listen).await?;
        // The port actually bound is the one never to dial (port 0 picks one).
        if let Ok(bound) = listener.local_addr() {
            config.dialer.policy.own_ports.retain(|p| *p != 0);
            config.dialer.policy.own_ports.push(bound.port());
        }
        let health = match config.health_listen {
            Some(addr) => Some(listen("health_listen", addr).await?),
            None => None,
        };
        Ok(Self { listener, health, config: Arc::new(config), stats: Arc::default(), cloudwatch: None })
    }

    /// The health and metrics address actually bound, if enabled.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Uses `client` for CloudWatch instead of one built from the AWS environment.
    pub fn with_cloudwatch_client(mut self, client: cloudwatch::CloudWatch) -> Self {
        self.cloudwatch = Some(client);
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        // The socket is bound; local_addr only fails on an unbound socket.
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// Shared counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Serves until `shutdown` fires, then drains for at most `drain_timeout`.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tls = self.config.tls.server_config().context("building the server TLS configuration")?;
        // Health and metrics outlive the drain: /healthz says 503 meanwhile.
        let after_drain = CancellationToken::new();
        if let Some(health) = self.health.take() {
            tokio::spawn(health::serve(health, self.stats.clone(), after_drain.clone()));
        }
        // Without its metrics the Sleep function would take a busy server
        // for an idle one: a server told to emit them and unable to is an error.
        let emitter = self
            .start_metrics(self.cloudwatch.clone(), after_drain.clone())
            .await
            .map_err(|e| anyhow::anyhow!("emit_metrics is on but cannot sign for CloudWatch: {e}"))?;
        let result = listener::accept_loop(self.listener, tls, self.config.clone(), self.stats, shutdown).await;
        after_drain.cancel();
        if let Some(emitter) = emitter {
            let _ = emitter.await;
        }
        result
    }

    async fn start_metrics(
        &self,
        client: Option<cloudwatch::CloudWatch>,
        stop: CancellationToken,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
        let settings = self.config.metrics.clone();
        if !settings.emit {
            return Ok(None);
        }
        let Some(dims) = cloudwatch::dimensions(&settings).await else {
            tracing::warn!("emit_metrics is on but no service name is known; not publishing metrics");
            return Ok(None);
        };
        let client = match client {
            Some(client) => client,
            None => cloudwatch::CloudWatch::from_environment(settings.endpoint_url.as_deref())?,
        };
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Ok(Some(tokio::spawn(cloudwatch::run(client, settings, dims, self.stats.clone(), started, stop))))
    }
}

/// Binds and runs with `config` until `shutdown` fires.
pub async fn run(config: ServerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let server = Server::bind(config).await?;
    match server.health_addr() {
        Some(health) => tracing::info!(addr = %server.local_addr(), %health, "server listening"),
        None => tracing::info!(addr = %server.local_addr(), "server listening"),
    }
    server.run(shutdown).await
}

/// Where Linux keeps the lowest port an unprivileged process may bind (per
/// network namespace; Fargate tasks set it with the task definition's
/// `SystemControls`).
const UNPRIVILEGED_PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

/// The port of [`config::DEFAULT_LISTEN`], offered when another is refused.
const DEFAULT_PORT: u16 = 8443;

/// Binds `addr`, the value of the setting `key`. A refusal the user has to
/// fix (privileged port, address in use, address not on this machine) comes
/// back as a [`ConfigError`], which the binary reports like any other
/// configuration mistake (one line, exit 2); anything else as a runtime error.
async fn listen(key: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        let start = || std::fs::read_to_string(UNPRIVILEGED_PORT_START).ok()?.trim().parse().ok();
        match bind_refused(key, addr, &error, start) {
            Some(refused) => refused.into(),
            None => anyhow::Error::new(error).context(format!("cannot listen on {addr} (`{key}`)")),
        }
    })
}

/// What a failed bind of `addr` means for the setting `key`, if the user can
/// fix it; `unprivileged_port_start` reads the sysctl (None if unreadable).
fn bind_refused(
    key: &str,
    addr: SocketAddr,
    error: &io::Error,
    unprivileged_port_start: impl FnOnce() -> Option<u16>,
) -> Option<ConfigError> {
    let port = addr.port();
    // The health listener's own default, not the proxy's.
    let alternative = if key == "health_listen" { 9090 } else { DEFAULT_PORT };
    let (problem, fix) = match error.kind() {
        io::ErrorKind::PermissionDenied => match unprivileged_port_start() {
            Some(start) if port < start => (
                format!("port {port} is privileged for this user: net.ipv4.ip_unprivileged_port_start is {start}"),
                format!(
                    "set that sysctl to {port} or lower, or listen on {}; on Fargate the task definition's SystemControls set it",
                    start.max(alternative)
                ),
            ),
            Some(_) => (error.to_string(), "run as a user allowed to bind it, or choose another address".into()),
            None => (
                format!(
                    "port {port} is privileged for this user: net.ipv4.ip_unprivileged_port_start is 1024 by default"
                ),
                format!("set that sysctl to {port} or lower, or listen on {alternative}"),
            ),
        },
        io::ErrorKind::AddrInUse => {
            ("the address is in use by another process".into(), "stop that process, or choose another port".into())
        }
        io::ErrorKind::AddrNotAvailable => (
            format!("{} is not an address of this machine", addr.ip()),
            "listen on 0.0.0.0 or on one of this machine's addresses".into(),
        ),
        _ => return None,
    };
    Some(ConfigError::new(key, format!("cannot listen on {addr}: {problem}"), fix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(addr: &str, kind: io::ErrorKind, start: Option<u16>) -> Option<String> {
        let addr = addr.parse().unwrap();
        bind_refused("listen", addr, &io::Error::from(kind), || start).map(|e| e.to_string())
    }

    #[test]
    fn a_privileged_port_names_the_sysctl_its_value_and_the_alternatives() {
        let line = refused("0.0.0.0:443", io::ErrorKind::PermissionDenied, Some(1024)).unwrap();
        assert_eq!(
            line,
            "configuration error: `listen`: cannot listen on 0.0.0.0:443: port 443 is privileged for this user: \
             net.ipv4.ip_unprivileged_port_start is 1024 (set that sysctl to 443 or lower, or listen on 8443; on \
             Fargate the task definition's SystemControls set it)"
        );
        // A sysctl set above the default port: the alternative offered must work.
        let line = refused("0.0.0.0:443", io::ErrorKind::PermissionDenied, Some(10000)).unwrap();
        assert!(line.contains("or listen on 10000;"), "{line}");
        let line = refused("0.0.0.0:443", io::ErrorKind::PermissionDenied, None).unwrap();
        assert!(line.contains("net.ipv4.ip_unprivileged_port_start is 1024 by default"), "{line}");
        // The health listener is offered its own default, not the proxy's.
        let health = "0.0.0.0:80".parse().unwrap();
        let error = io::Error::from(io::ErrorKind::PermissionDenied);
        let line = bind_refused("health_listen", health, &error, || Some(1024)).unwrap().to_string();
        assert!(line.contains("`health_listen`") && line.contains("or listen on 9090;"), "{line}");
    }

    #[test]
    fn each_refusal_the_user_can_fix_is_one_line_naming_the_setting() {
        let cases = [
            ("0.0.0.0:8443", io::ErrorKind::PermissionDenied, Some(1024), "permission denied"),
            ("127.0.0.1:8443", io::ErrorKind::AddrInUse, Some(1024), "in use by another process"),
            ("192.0.2.1:8443", io::ErrorKind::AddrNotAvailable, Some(1024), "192.0.2.1 is not an address"),
        ];
        for (addr, kind, start, expected) in cases {
            let line = refused(addr, kind, start).unwrap();
            assert!(line.contains("`listen`") && line.contains(expected), "{kind:?}: {line}");
            assert!(!line.contains('\n'), "{line}");
        }
        assert_eq!(refused("0.0.0.0:8443", io::ErrorKind::OutOfMemory, Some(1024)), None);
        assert!(config::DEFAULT_LISTEN.ends_with(&format!(":{DEFAULT_PORT}")));
    }
}
