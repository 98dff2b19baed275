//! Accept loop and per-connection handling for local clients, the agent's
//! counterpart of the server's listener: at most [`MAX_WAITING_CLIENTS`]
//! connections that have not sent a request yet, [`HEADER_READ_TIMEOUT`] to
//! send a request head, SOCKS5 told from HTTP by the first byte, HTTP/1.1
//! served by hyper (with upgrades for CONNECT and WebSocket), graceful
//! shutdown on cancel and a bounded drain at the end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::handler::Handler;
use crate::telemetry::LogBudget;

/// How long a local client has to send a complete request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Local connections that may be open without having sent a request this
/// proxy serves (an authorised one, or the PAC file); more are closed at
/// once, so clients that never authenticate cannot hold unbounded sockets.
pub const MAX_WAITING_CLIENTS: usize = 256;

/// What the accept loop needs besides the listener.
pub(super) struct Limits {
    pub max_header_bytes: usize,
    pub drain_timeout: Duration,
}

/// Accepts local clients until `shutdown` fires, then drains for at most
/// `drain_timeout`.
pub(super) async fn accept_loop(
    listener: TcpListener,
    handler: Arc<Handler>,
    tracker: TaskTracker,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let waiting = Arc::new(Semaphore::new(MAX_WAITING_CLIENTS));
    let refusals = LogBudget::new(5, Duration::from_secs(10));
    while let Some((tcp, peer)) = crate::shutdown::accept(&listener, &shutdown).await {
        let Ok(permit) = waiting.clone().try_acquire_owned() else {
            if let Some(left_out) = refusals.admit() {
                warn!(%peer, left_out, "{MAX_WAITING_CLIENTS} local connections have sent no request yet; closing a new one");
            }
            continue;
        };
        let span = info_span!("client", %peer);
        let client = Client { handler: handler.clone(), peer, max_header_bytes: limits.max_header_bytes, permit };
        tracker.spawn(client.serve(tcp, shutdown.clone()).instrument(span));
    }
    drop(listener);
    tracker.close();
    info!(open = tracker.len(), grace = ?limits.drain_timeout, "stopped accepting, draining");
    if tokio::time::timeout(limits.drain_timeout, tracker.wait()).await.is_err() {
        warn!(open = tracker.len(), "drain deadline reached, closing what is left");
    }
}

/// One local client connection.
struct Client {
    handler: Arc<Handler>,
    /// The client's address (the status page answers loopback clients only).
    peer: std::net::SocketAddr,
    max_header_bytes: usize,
    /// Held until the client's first request head has arrived.
    permit: OwnedSemaphorePermit,
}

impl Client {
    async fn serve(self, tcp: TcpStream, shutdown: CancellationToken) {
        let _ = tcp.set_nodelay(true);
        // One port, two protocols: a SOCKS5 client's first byte is 5, which
        // no HTTP request line starts with.
        let mut first = [0u8; 1];
        match tokio::time::timeout(HEADER_READ_TIMEOUT, tcp.peek(&mut first)).await {
            Ok(Ok(1)) if first[0] == super::socks::VERSION => {
                return self.handler.socks(tcp, self.permit, HEADER_READ_TIMEOUT).await;
            }
            Ok(Ok(1)) => {}
            // Closed, broken, or silent for the whole header timeout.
            _ => return,
        }
        let (handler, waiting, peer) = (self.handler, Mutex::new(Some(self.permit)), self.peer);
        let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(super::status::Peer(peer));
            // A request this proxy will serve (authorised, or the PAC file):
            // the client no longer counts as waiting. One refused with 407
            // keeps its slot, so unauthenticated clients stay capped.
            if handler.admits(&req) {
                waiting.lock().unwrap_or_else(|e| e.into_inner()).take();
            }
            handler.clone().handle(req)
        });
        // A client that connects and sends no request head (or one very slowly)
        // is closed instead of being held for ever.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(self.max_header_bytes.max(8192))
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(error) = result {
            debug!(%error, "client connection ended with an error");
        }
    }
}
