//! Accept loop and per-connection handling: at most `max_handshakes` TLS
//! handshakes at once, each with a deadline, failures logged within a budget,
//! client certificate name into the connection span, HTTP/2 served on `h2`
//! and HTTP/1.1 by hyper, graceful shutdown on cancel, bounded drain at the end.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::task::Poll;
use std::time::Duration;

use futures_util::StreamExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::proxy::Proxy;
use super::stats::HandshakeFailure;
use super::{ServerConfig, Stats};
use crate::telemetry::LogBudget;
use crate::tls::{describe_handshake_error, peer_name};

pub(super) async fn accept_loop(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    config: Arc<ServerConfig>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let acceptor = Arc::new(RwLock::new(TlsAcceptor::from(tls)));
    tokio::spawn(reload_on_hangup(config.clone(), acceptor.clone(), shutdown.clone()));
    let tracker = TaskTracker::new();
    let proxy = Arc::new(Proxy::new(config.clone(), stats.clone(), tracker.clone()));
    let handshakes = Arc::new(Semaphore::new(config.max_handshakes as usize));
    // Failed or refused handshakes are the client's to trigger: at most 10
    // lines per 10 s, each saying how many were left out before it (every
    // one is counted in `fluidity_handshake_failures_total`).
    let failure_lines = Arc::new(LogBudget::new(10, Duration::from_secs(10)));
    while let Some((tcp, peer)) = crate::shutdown::accept(&listener, &shutdown).await {
        stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
        // Silent or slow clients could hold every descriptor in handshakes
        // that time out one by one: past the cap, new ones are closed unheard.
        let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
            stats.handshake_failed(HandshakeFailure::Busy);
            if let Some(left_out) = failure_lines.admit() {
                let max = config.max_handshakes;
                warn!(%peer, left_out, "too many TLS handshakes under way (max_handshakes = {max}), closing");
            }
            continue;
        };
        let connection = Connection {
            acceptor: acceptor.read().unwrap_or_else(|e| e.into_inner()).clone(),
            proxy: proxy.clone(),
            config: config.clone(),
            stats: stats.clone(),
            failure_lines: failure_lines.clone(),
            shutdown: shutdown.clone(),
        };
        tracker.spawn(connection.serve(tcp, peer, handshake));
    }
    drop(listener);
    tracker.close();
    stats.draining.store(true, Ordering::Relaxed);
    info!(open = tracker.len(), grace = ?config.drain_timeout, "stopped accepting, draining");
    if tokio::time::timeout(config.drain_timeout, tracker.wait()).await.is_err() {
        warn!(open = tracker.len(), "drain deadline reached, closing what is left");
    }
    info!("server stopped");
    Ok(())
}

/// Re-reads certificate, key and CA on SIGHUP; new handshakes use them,
/// established connections and tunnels are untouched. Bad material is refused
/// with a log line and the old configuration kept.
async fn reload_on_hangup(config: Arc<ServerConfig>, acceptor: Arc<RwLock<TlsAcceptor>>, shutdown: CancellationToken) {
    crate::shutdown::on_hangup(shutdown, || {
        let sources = &config.tls_sources;
        let rebuilt = crate::tls::TlsMaterial::load(sources, "tls")
            .and_then(|material| material.require_purpose(true, sources, "tls").map(|()| material))
            .map_err(|e| e.to_string())
            .and_then(|material| material.server_config().map_err(|e| e.to_string()));
        match rebuilt {
            Ok(tls) => {
                *acceptor.write().unwrap_or_else(|e| e.into_inner()) = TlsAcceptor::from(tls);
                info!("certificates reloaded");
            }
            Err(error) => warn!(%error, "certificate reload refused, keeping the old material"),
        }
    })
    .await;
}

/// Everything one accepted connection needs.
struct Connection {
    acceptor: TlsAcceptor,
    proxy: Arc<Proxy>,
    config: Arc<ServerConfig>,
    stats: Arc<Stats>,
    failure_lines: Arc<LogBudget>,
    shutdown: CancellationToken,
}

impl Connection {
    async fn serve(self, tcp: TcpStream, peer: SocketAddr, handshake: OwnedSemaphorePermit) {
        let _ = tcp.set_nodelay(true);
        let accepted = tokio::time::timeout(self.config.handshake_timeout, self.acceptor.accept(tcp)).await;
        drop(handshake);
        let tls = match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                self.stats.handshake_failed(HandshakeFailure::of(&error));
                if let Some(left_out) = self.failure_lines.admit() {
                    warn!(%peer, reason = %describe_handshake_error(&error), left_out, "tls handshake failed");
                }
                return;
            }
            Err(_) => {
                self.stats.handshake_failed(HandshakeFailure::Timeout);
                if let Some(left_out) = self.failure_lines.admit() {
                    warn!(%peer, reason = "timeout", left_out, "tls handshake failed");
                }
                return;
            }
        };
        self.stats.handshakes_ok.fetch_add(1, Ordering::Relaxed);
        let (_, session) = tls.get_ref();
        let client = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(peer_name)
            .unwrap_or_else(|| "unknown".into());
        let alpn = session.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default();
        let span = info_span!("conn", %peer, %client);
        self.http(tls, alpn).instrument(span).await;
    }

    async fn http(self, tls: tokio_rustls::server::TlsStream<TcpStream>, alpn: String) {
        info!(%alpn, "agent connected");
        let _active = self.stats.hold(|s| &s.connections_active);
        let span = tracing::Span::current();
        let proxy = self.proxy.clone();
        let result = if alpn == "h2" {
            // Every tunnel is a stream of this connection: when the
            // connection is gone (the agent died, the network broke, GOAWAY
            // and close) they are cut at once, not left to their idle
            // timeout with their target connections open.
            let gone = CancellationToken::new();
            let result = self.http2(tls, proxy, span, gone.clone()).await;
            gone.cancel();
            result
        } else {
            // HTTP/1.1 (RFC 9113 §3.2: HTTP/2 over TLS is chosen by ALPN).
            let service = service_fn(move |req| proxy.clone().handle(req, span.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size((self.config.max_header_bytes as usize).max(8192))
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = self.shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            result.map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => info!("agent disconnected"),
            Err(error) => debug!(%error, "agent connection ended with an error"),
        }
    }

    /// An HTTP/2 connection on `h2` directly: each stream is served in this
    /// task, where hyper's server spawned one per stream; a `CONNECT`
    /// tunnel alone gets a task of its own. The client's preface must come
    /// within `handshake_timeout`, and a shutdown meanwhile ends it.
    async fn http2(
        &self,
        tls: tokio_rustls::server::TlsStream<TcpStream>,
        proxy: Arc<Proxy>,
        span: tracing::Span,
        tunnels: CancellationToken,
    ) -> Result<(), String> {
        let config = &self.config;
        let handshake = h2::server::Builder::new()
            .max_concurrent_streams(config.max_concurrent_streams)
            .initial_window_size(config.stream_window)
            .initial_connection_window_size(config.connection_window)
            .max_header_list_size(config.max_header_bytes)
            .max_send_buffer_size(1024 * 1024)
            // Larger DATA frames from the agent: fewer frames and writes per MiB.
            .max_frame_size(crate::tls::MAX_H2_FRAME)
            .handshake(tls);
        let mut connection = tokio::select! {
            started = tokio::time::timeout(config.handshake_timeout, handshake) => match started {
                Ok(started) => started.map_err(|e| e.to_string())?,
                Err(_) => return Err(format!("no HTTP/2 preface within {:?}", config.handshake_timeout)),
            },
            () = self.shutdown.cancelled() => return Ok(()),
        };
        let mut streams = futures_util::stream::FuturesUnordered::new();
        let mut draining = false;
        let cancelled = self.shutdown.cancelled();
        tokio::pin!(cancelled);
        std::future::poll_fn(|cx| {
            if !draining && cancelled.as_mut().poll(cx).is_ready() {
                draining = true;
                connection.graceful_shutdown();
            }
            // Streams first, every one that can go on: what they send then
            // leaves in one write when the connection is polled below.
            while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
            loop {
                match connection.poll_accept(cx) {
                    Poll::Ready(Some(Ok((req, respond)))) => {
                        streams.push(proxy.clone().serve_stream(req, respond, span.clone(), tunnels.clone()));
                    }
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error.to_string())),
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Pending => break,
                }
            }
            // New streams start at once; what they send wakes this task to write it.
            while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
            Poll::Pending
        })
        .await
    }
}
