//! The tunnel: a small pool of long-lived mutual-TLS HTTP/2 connections to the
//! server. Requests pick a connection round-robin and become streams on it; a
//! closed connection is replaced on next use.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;
use tracing::{Instrument, debug, info, info_span, warn};

use super::AgentConfig;
use crate::http_util::Body;

/// Why no tunnel connection could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TunnelError {
    #[error("cannot reach the Fluidity server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("timed out after {after:?} connecting to the Fluidity server at {server}")]
    Timeout { server: String, after: Duration },
    #[error("refusing the server at {server}: {reason}")]
    Certificate { server: String, reason: String },
    #[error("TLS with the Fluidity server at {server} failed: {reason}")]
    Tls { server: String, reason: String },
    #[error("the server at {server} did not agree to HTTP/2; is it a Fluidity server?")]
    NoH2 { server: String },
    #[error("HTTP/2 setup with the server at {server} failed: {reason}")]
    Http2 { server: String, reason: String },
}

impl TunnelError {
    /// True when retrying cannot help until the configuration changes.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Certificate { .. } | Self::NoH2 { .. })
    }
}

/// Long-lived connections to the server.
pub struct Pool {
    slots: Vec<Mutex<Option<SendRequest<Body>>>>,
    next: AtomicUsize,
    connector: Connector,
    opened: AtomicU64,
}

impl Pool {
    /// A pool of `config.pool_size` lazily opened connections.
    pub fn new(config: &AgentConfig) -> Result<Self, crate::tls::TlsError> {
        let tls = config.tls.client_config(&[b"h2"])?;
        Ok(Self {
            slots: (0..config.pool_size).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            connector: Connector {
                server: config.server.clone(),
                server_name: config.server_name.clone(),
                tls: TlsConnector::from(tls),
                timeout: config.connect_timeout,
            },
            opened: AtomicU64::new(0),
        })
    }

    /// How many TLS connections this pool has opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// A ready sender on one of the pool's connections, connecting if needed.
    pub async fn sender(&self) -> Result<SendRequest<Body>, TunnelError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[index].lock().await;
        if let Some(sender) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        let sender = self.connector.connect(index).await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        *slot = Some(sender.clone());
        Ok(sender)
    }
}

struct Connector {
    server: String,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    timeout: Duration,
}

impl Connector {
    async fn connect(&self, index: usize) -> Result<SendRequest<Body>, TunnelError> {
        match tokio::time::timeout(self.timeout, self.handshake(index)).await {
            Ok(result) => result,
            Err(_) => Err(TunnelError::Timeout {
                server: self.server.clone(),
                after: self.timeout,
            }),
        }
    }

    async fn handshake(&self, index: usize) -> Result<SendRequest<Body>, TunnelError> {
        let server = self.server.clone();
        let tcp = TcpStream::connect(&server)
            .await
            .map_err(|e| TunnelError::Unreachable {
                server: server.clone(),
                reason: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| self.tls_error(&e))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(TunnelError::NoH2 { server });
        }
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(4 * 1024 * 1024)
            .initial_connection_window_size(16 * 1024 * 1024)
            .max_send_buf_size(1024 * 1024)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| TunnelError::Http2 {
                server: server.clone(),
                reason: e.to_string(),
            })?;
        let span = info_span!(parent: None, "tunnel", slot = index, server = %server);
        tokio::spawn(
            async move {
                info!("tunnel connection up");
                match connection.await {
                    Ok(()) => info!("tunnel connection closed"),
                    Err(error) => warn!(%error, "tunnel connection lost"),
                }
            }
            .instrument(span),
        );
        debug!(slot = index, "connected");
        Ok(sender)
    }

    fn tls_error(&self, error: &std::io::Error) -> TunnelError {
        let server = self.server.clone();
        let name = self.server_name.to_str();
        match error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => TunnelError::Certificate {
                server,
                reason: format!(
                    "its certificate is not valid for the name {name}; set server_name to the name it carries or reissue it with fluidity-certs --san"
                ),
            },
            Some(rustls::Error::InvalidCertificate(reason)) => TunnelError::Certificate {
                server,
                reason: format!(
                    "its certificate is not trusted ({reason:?}); check tls.ca points at the CA that signed it"
                ),
            },
            Some(other) => TunnelError::Tls {
                server,
                reason: other.to_string(),
            },
            None => TunnelError::Tls {
                server,
                reason: error.to_string(),
            },
        }
    }
}
