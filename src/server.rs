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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{ServerArgs, ServerConfig};
pub use stats::Stats;

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
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
        // The port actually bound is the one never to dial (port 0 picks one).
        if let Ok(bound) = listener.local_addr() {
            config.dialer.policy.own_ports.retain(|p| *p != 0);
            config.dialer.policy.own_ports.push(bound.port());
        }
        let health = match config.health_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} for health and metrics (set health_listen, or off)")
            })?),
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
