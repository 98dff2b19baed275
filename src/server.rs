//! The Fluidity server: a standard HTTP forward proxy behind mutual TLS 1.3.
//!
//! [`Server::bind`] opens the listener; [`Server::run`] accepts until the
//! shutdown token fires, then drains. Each accepted connection is handled by
//! `listener::serve_connection` (TLS handshake, HTTP/1.1 or HTTP/2 by ALPN);
//! each request by `proxy::Proxy` (absolute-form forwarding and `CONNECT`).

pub mod config;
pub mod dial;
pub mod egress;
mod listener;
mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{ServerArgs, ServerConfig};

/// Counters readable while the server runs (tests, and later telemetry).
#[derive(Debug, Default)]
pub struct Stats {
    /// TCP connections accepted.
    pub connections_accepted: AtomicU64,
    /// TLS handshakes that completed.
    pub handshakes_ok: AtomicU64,
    /// TLS handshakes that failed (no/bad client certificate, timeouts…).
    pub handshakes_failed: AtomicU64,
    /// Requests and tunnels served.
    pub streams: AtomicU64,
    /// Targets refused by the egress policy.
    pub egress_refused: AtomicU64,
    /// Dials that failed (DNS, refused, timeout).
    pub dial_errors: AtomicU64,
    /// Bytes relayed and the time of the last one, for every kind of traffic.
    pub activity: Arc<crate::relay::Activity>,
}

impl Stats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    config: Arc<ServerConfig>,
    stats: Arc<Stats>,
}

impl Server {
    /// Binds the listening socket and builds the TLS configuration.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Self> {
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
        Ok(Self { listener, config: Arc::new(config), stats: Arc::default() })
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
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tls = self.config.tls.server_config().context("building the server TLS configuration")?;
        listener::accept_loop(self.listener, tls, self.config, self.stats, shutdown).await
    }
}

/// Binds and runs with `config` until `shutdown` fires.
pub async fn run(config: ServerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let server = Server::bind(config).await?;
    tracing::info!(addr = %server.local_addr(), "server listening");
    server.run(shutdown).await
}
