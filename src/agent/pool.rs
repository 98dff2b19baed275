//! The tunnel: a small pool of long-lived mutual-TLS HTTP/2 connections to the
//! server. One supervisor task per slot keeps its connection up: it connects,
//! waits for the connection to end (closed, GOAWAY, or a PING unanswered within
//! the keepalive timeout), then reconnects with capped exponential backoff and
//! jitter. Requests take any live connection round-robin; while none is up they
//! wait up to `request_wait`, then get [`TunnelError::Down`].
//!
//! A pool is *dormant* while the control plane has the server stopped: its
//! supervisors dial nothing (the old address may belong to someone else by
//! now), and the first request asks the lifecycle to wake the server
//! ([`Pool::demanded`]) and waits for it, up to the wake timeout.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::AgentConfig;
use super::config::TunnelSettings;
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
    #[error("the server at {server} refused this agent: {reason}")]
    Rejected { server: String, reason: String },
    #[error("the tunnel to the Fluidity server is down and reconnecting ({last}); retry shortly")]
    Down { last: String },
    #[error("{reason}")]
    Asleep { reason: String },
}

impl TunnelError {
    /// True when retrying cannot help until the configuration changes.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Certificate { .. } | Self::NoH2 { .. })
    }
}

/// One connection slot: the live connection's id and sender, if any.
type Slot = RwLock<Option<(u64, SendRequest<Body>, CancellationToken)>>;

/// State shared between the pool handle and its supervisors.
struct Shared {
    /// Each slot's live connection and its unique id.
    slots: Vec<Slot>,
    /// Bumped whenever a slot comes up or an attempt fails; waiters watch it.
    changes: watch::Sender<u64>,
    last_error: Mutex<Option<TunnelError>>,
    /// The failures logged by any slot since a connection was last up: each
    /// reason is logged once, not on every retry.
    logged: Mutex<std::collections::HashSet<String>>,
    opened: AtomicU64,
    connector: RwLock<Connector>,
    settings: TunnelSettings,
    /// Wakes supervisors out of their backoff (the server moved).
    kick: tokio::sync::Notify,
    /// The server is stopped: dial nothing, wake it on demand.
    dormant: watch::Sender<bool>,
    /// A request is waiting for the dormant server (the lifecycle listens). A
    /// state, not a notification: however many requests ask, one wake
    /// happens, and nothing is left over to wake the server later unasked.
    demand: watch::Sender<bool>,
    /// Why waking failed; `(reason, final)`; waiting requests get it.
    wake_failure: Mutex<Option<(String, bool)>>,
    /// How long a request waits for a wake on demand.
    wake_wait: Mutex<Duration>,
}

impl Shared {
    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Long-lived connections to the server; dropping the pool stops its supervisors.
pub struct Pool {
    shared: Arc<Shared>,
    next: AtomicUsize,
    stop: CancellationToken,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Pool {
    /// Builds the pool and starts one supervisor per slot (needs a Tokio runtime).
    pub fn start(config: &AgentConfig) -> Result<Self, crate::tls::TlsError> {
        let connector = Connector::new(config)?;
        let shared = Arc::new(Shared {
            slots: (0..config.pool_size).map(|_| RwLock::new(None)).collect(),
            changes: watch::Sender::new(0),
            last_error: Mutex::new(None),
            logged: Mutex::default(),
            opened: AtomicU64::new(0),
            connector: RwLock::new(connector),
            settings: config.tunnel.clone(),
            kick: tokio::sync::Notify::new(),
            dormant: watch::Sender::new(false),
            demand: watch::Sender::new(false),
            wake_failure: Mutex::new(None),
            wake_wait: Mutex::new(config.tunnel.request_wait),
        });
        let stop = CancellationToken::new();
        for index in 0..config.pool_size {
            let span = info_span!(parent: None, "tunnel", slot = index);
            tokio::spawn(supervise(shared.clone(), index, stop.clone()).instrument(span));
        }
        Ok(Self { shared, next: AtomicUsize::new(0), stop })
    }

    /// How many TLS connections this pool has opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.shared.opened.load(Ordering::Relaxed)
    }

    /// How many connections are up right now.
    pub fn connections_up(&self) -> usize {
        self.shared.slots.iter().filter(|slot| live(slot).is_some()).count()
    }

    /// Replaces the TLS material used for new connections (certificate reload).
    pub fn set_tls(&self, config: &AgentConfig) -> Result<(), crate::tls::TlsError> {
        let fresh = Connector::new(config)?;
        let mut connector = self.shared.connector.write().unwrap_or_else(|e| e.into_inner());
        // Keep the current address: the server may have moved since start-up.
        *connector = Connector { server: connector.server.clone(), ..fresh };
        drop(connector);
        // New material: try it now, and name its failure again if it fails.
        lock(&self.shared.logged).clear();
        self.shared.kick.notify_waiters();
        Ok(())
    }

    /// The server address new connections dial.
    pub fn server(&self) -> String {
        self.shared.connector.read().unwrap_or_else(|e| e.into_inner()).server.clone()
    }

    /// Points new connections at `server` (it moved, e.g. a new Fargate task)
    /// and cuts short any reconnect backoff. Live connections are untouched.
    pub fn set_server(&self, server: &str) {
        self.shared.connector.write().unwrap_or_else(|e| e.into_inner()).server = server.to_string();
        *self.shared.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.shared.kick.notify_waiters();
    }

    /// A live connection, waiting up to `request_wait` for one.
    pub async fn sender(&self) -> Result<Lease, TunnelError> {
        self.sender_other_than(None).await
    }

    /// A live connection other than `failed` (a fresh one if `failed` was the
    /// only one), for retrying a request that never reached the server.
    pub async fn retry(&self, failed: &Lease) -> Result<Lease, TunnelError> {
        self.sender_other_than(Some(failed.id)).await
    }

    async fn sender_other_than(&self, avoid: Option<u64>) -> Result<Lease, TunnelError> {
        let mut changes = self.shared.changes.subscribe();
        let mut deadline = tokio::time::Instant::now() + self.shared.settings.request_wait;
        let mut asked = false;
        loop {
            changes.borrow_and_update();
            if let Some(lease) = self.pick(avoid) {
                return Ok(lease);
            }
            if self.is_dormant() {
                let failure = lock(&self.shared.wake_failure).clone();
                match failure {
                    Some((reason, true)) => return Err(TunnelError::Asleep { reason }),
                    Some((reason, false)) if asked => return Err(TunnelError::Asleep { reason }),
                    _ if asked => {}
                    _ => {
                        // This request asks for the server (unless a wake is
                        // already under way) and waits for it.
                        let first = self.shared.demand.send_if_modified(|pending| !std::mem::replace(pending, true));
                        if first {
                            *lock(&self.shared.wake_failure) = None;
                        }
                        asked = true;
                        deadline = tokio::time::Instant::now() + *lock(&self.shared.wake_wait);
                    }
                }
            }
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                return Err(if self.is_dormant() {
                    TunnelError::Asleep {
                        reason: "the server is asleep and did not wake in time; retry shortly".into(),
                    }
                } else {
                    self.down()
                });
            }
        }
    }

    /// Whether the server is stopped and waits for a request to wake it.
    pub fn is_dormant(&self) -> bool {
        *self.shared.dormant.borrow()
    }

    /// The server was stopped by the control plane: dial nothing until a
    /// request wakes it; such a request waits up to `wake_wait`.
    pub fn set_dormant(&self, wake_wait: Duration) {
        *lock(&self.shared.wake_wait) = wake_wait + self.shared.settings.request_wait;
        *lock(&self.shared.wake_failure) = None;
        self.shared.demand.send_replace(false);
        self.shared.dormant.send_replace(true);
        self.shared.bump();
    }

    /// Resolves when a request is waiting for the dormant server.
    pub async fn demanded(&self) {
        let mut demand = self.shared.demand.subscribe();
        let _ = demand.wait_for(|pending| *pending).await;
    }

    /// Whether a request asked for the server and its wake has not ended yet
    /// (the server may be starting: stop it on exit).
    pub fn demand_pending(&self) -> bool {
        *self.shared.demand.borrow()
    }

    /// The server is up again at `server`: connect and serve the waiting requests.
    pub fn woke(&self, server: &str) {
        self.set_server(server);
        self.shared.demand.send_replace(false);
        self.shared.dormant.send_replace(false);
        self.shared.bump();
    }

    /// Waking failed: the waiting requests get `reason`; the next request tries again.
    pub fn wake_failed(&self, reason: &str) {
        *lock(&self.shared.wake_failure) = Some((reason.to_owned(), false));
        self.shared.demand.send_replace(false);
        self.shared.bump();
    }

    /// Waking can never work in this run (the API quota is spent): every
    /// request while dormant gets `reason` at once.
    pub fn stop_waking(&self, reason: &str) {
        *lock(&self.shared.wake_failure) = Some((reason.to_owned(), true));
        self.shared.bump();
    }

    /// Waits until the first connection attempt settles: Ok once a connection
    /// is up or the server is merely unreachable (the supervisors keep
    /// trying); the error when it can never work (certificate, protocol).
    pub async fn first_attempt(&self) -> Result<(), TunnelError> {
        let mut changes = self.shared.changes.subscribe();
        loop {
            if self.connections_up() > 0 {
                return Ok(());
            }
            if let Some(error) = self.last_error() {
                return if error.is_fatal() { Err(error) } else { Ok(()) };
            }
            if changes.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// The last connection error, if the latest attempt failed.
    pub fn last_error(&self) -> Option<TunnelError> {
        self.shared.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn pick(&self, avoid: Option<u64>) -> Option<Lease> {
        let n = self.shared.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).filter_map(|i| live(&self.shared.slots[(start + i) % n])).find(|lease| Some(lease.id) != avoid)
    }

    fn down(&self) -> TunnelError {
        let last = self.last_error().map(|e| e.to_string()).unwrap_or_else(|| "no connection yet".into());
        TunnelError::Down { last }
    }
}

/// A connection handed to one request.
pub struct Lease {
    /// Unique id of the connection (for retries on another one).
    pub id: u64,
    pub sender: SendRequest<Body>,
    /// Cancelled the moment the connection dies, so bodies and tunnels on it
    /// fail at once instead of draining what was buffered.
    pub lost: CancellationToken,
}

fn live(slot: &Slot) -> Option<Lease> {
    let guard = slot.read().unwrap_or_else(|e| e.into_inner());
    let (id, sender, lost) = guard.as_ref()?;
    (!sender.is_closed()).then(|| Lease { id: *id, sender: sender.clone(), lost: lost.clone() })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps slot `index` connected until `stop` (dialling nothing while dormant).
async fn supervise(shared: Arc<Shared>, index: usize, stop: CancellationToken) {
    let mut failures: u32 = 0;
    let mut dormant = shared.dormant.subscribe();
    loop {
        if *dormant.borrow_and_update() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = dormant.wait_for(|d| !*d) => failures = 0,
            }
        }
        let connector = shared.connector.read().unwrap_or_else(|e| e.into_inner()).clone();
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            attempt = connector.connect() => attempt,
        };
        match attempt {
            Ok((sender, connection)) => {
                failures = 0;
                lock(&shared.logged).clear();
                let id = shared.opened.fetch_add(1, Ordering::Relaxed);
                let lost = CancellationToken::new();
                *shared.slots[index].write().unwrap_or_else(|e| e.into_inner()) = Some((id, sender, lost.clone()));
                *shared.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                shared.bump();
                info!("tunnel connection up");
                let ended = tokio::select! {
                    _ = stop.cancelled() => return,
                    ended = connection.task => ended,
                };
                *shared.slots[index].write().unwrap_or_else(|e| e.into_inner()) = None;
                // A graceful close (GOAWAY, all streams finished) leaves what was
                // received valid; only a broken connection aborts its streams.
                match ended {
                    Ok(Ok(())) if connection.broken.load(Ordering::Relaxed) => {
                        lost.cancel();
                        warn!("tunnel connection dropped by the network or the server, reconnecting");
                    }
                    Ok(Ok(())) => info!("tunnel connection closed by the server, reconnecting"),
                    Ok(Err(error)) => {
                        lost.cancel();
                        warn!(%error, "tunnel connection lost, reconnecting");
                    }
                    Err(error) => {
                        lost.cancel();
                        warn!(%error, "tunnel connection task failed, reconnecting");
                    }
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let fresh = {
                    let mut logged = lock(&shared.logged);
                    if logged.len() >= 32 {
                        logged.clear(); // reasons that keep changing: start over
                    }
                    logged.insert(error.to_string())
                };
                if fresh {
                    warn!(%error, failures, "tunnel connection attempt failed");
                } else {
                    debug!(%error, failures, "tunnel connection attempt failed");
                }
                *shared.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                shared.bump();
            }
        }
        let delay = backoff(failures, shared.settings.reconnect_base, shared.settings.reconnect_max);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
            _ = shared.kick.notified() => failures = 0,
        }
    }
}

/// Exponential backoff with jitter: `base * 2^(failures-1)`, capped at `max`,
/// then a random point in its upper half. No failure yet means `base / 2`.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    let ceiling = base.saturating_mul(1u32 << exponent).min(max);
    let half = ceiling / 2;
    half + half.mul_f64(jitter())
}

/// A random number in [0, 1) from the standard library's per-hasher random keys.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// A running connection: its driver task and whether its transport broke
/// (an I/O error, or EOF without TLS close_notify) rather than closing cleanly.
struct Connection {
    task: tokio::task::JoinHandle<Result<(), hyper::Error>>,
    broken: Arc<AtomicBool>,
}

pin_project_lite::pin_project! {
    /// Transport wrapper that records a broken read and tells when the first
    /// bytes from the server arrive.
    struct Watched<T> {
        #[pin]
        inner: T,
        broken: Arc<AtomicBool>,
        heard: Option<tokio::sync::oneshot::Sender<()>>,
        failure: Arc<Mutex<Option<TransportFailure>>>,
    }
}

/// What broke a transport: HTTP/2 errors do not carry their I/O cause, so
/// the wrapper keeps it (an alert from the server wins over later errors).
#[derive(Debug, Clone)]
enum TransportFailure {
    Alert(rustls::AlertDescription),
    Io(String),
}

fn record(failure: &Mutex<Option<TransportFailure>>, error: &std::io::Error) {
    let mut failure = lock(failure);
    if let Some(rustls::Error::AlertReceived(alert)) = error.get_ref().and_then(|e| e.downcast_ref()) {
        *failure = Some(TransportFailure::Alert(*alert));
    } else if failure.is_none() {
        *failure = Some(TransportFailure::Io(error.to_string()));
    }
}

impl<T: tokio::io::AsyncRead> tokio::io::AsyncRead for Watched<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        match &polled {
            std::task::Poll::Ready(Err(error)) => {
                this.broken.store(true, Ordering::Relaxed);
                record(this.failure, error);
            }
            std::task::Poll::Ready(Ok(())) if buf.filled().len() > before => {
                if let Some(heard) = this.heard.take() {
                    let _ = heard.send(());
                }
            }
            _ => {}
        }
        polled
    }
}

impl<T: tokio::io::AsyncWrite> tokio::io::AsyncWrite for Watched<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        if let std::task::Poll::Ready(Err(error)) = &polled {
            this.broken.store(true, Ordering::Relaxed);
            record(this.failure, error);
        }
        polled
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[derive(Clone)]
struct Connector {
    server: String,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    settings: TunnelSettings,
}

impl Connector {
    fn new(config: &AgentConfig) -> Result<Self, crate::tls::TlsError> {
        Ok(Self {
            server: config.server.clone(),
            server_name: config.server_name.clone(),
            tls: TlsConnector::from(config.tls.client_config(&[b"h2"])?),
            settings: config.tunnel.clone(),
        })
    }

    async fn connect(&self) -> Result<(SendRequest<Body>, Connection), TunnelError> {
        let after = self.settings.connect_timeout;
        match tokio::time::timeout(after, self.handshake()).await {
            Ok(result) => result,
            Err(_) => Err(TunnelError::Timeout { server: self.server.clone(), after }),
        }
    }

    async fn handshake(&self) -> Result<(SendRequest<Body>, Connection), TunnelError> {
        let server = self.server.clone();
        let tcp = TcpStream::connect(&server)
            .await
            .map_err(|e| TunnelError::Unreachable { server: server.clone(), reason: e.to_string() })?;
        let _ = tcp.set_nodelay(true);
        let tls = self.tls.connect(self.server_name.clone(), tcp).await.map_err(|e| self.tls_error(&e))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(TunnelError::NoH2 { server });
        }
        let s = &self.settings;
        let broken = Arc::new(AtomicBool::new(false));
        let (heard, first_bytes) = tokio::sync::oneshot::channel();
        let failure = Arc::new(Mutex::new(None));
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(s.stream_window)
            .initial_connection_window_size(s.connection_window)
            .max_send_buf_size(1024 * 1024)
            // Larger DATA frames from the server: fewer frames and writes per MiB.
            .max_frame_size(crate::tls::MAX_H2_FRAME)
            .max_header_list_size(s.max_header_bytes)
            .keep_alive_interval(s.keepalive_interval)
            .keep_alive_timeout(s.keepalive_timeout)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(Watched {
                inner: tls,
                broken: broken.clone(),
                heard: Some(heard),
                failure: failure.clone(),
            }))
            .await
            .map_err(|e| TunnelError::Http2 { server: server.clone(), reason: e.to_string() })?;
        let mut task = tokio::spawn(connection);
        // Dropped by the connect timeout, the unconfirmed connection goes too.
        let unconfirmed = AbortOnDrop(Some(task.abort_handle()));
        // In TLS 1.3 the client's handshake ends before the server has judged
        // its certificate: the server's verdict is its first record, an alert
        // or its HTTP/2 SETTINGS. Only the latter makes the connection "up".
        tokio::select! {
            heard = first_bytes => match heard {
                Ok(()) => {
                    unconfirmed.disarm();
                    Ok((sender, Connection { task, broken }))
                }
                // The transport was dropped unheard: the task has ended.
                Err(_) => Err(self.ended_unheard((&mut task).await, lock(&failure).clone())),
            },
            ended = &mut task => Err(self.ended_unheard(ended, lock(&failure).clone())),
        }
    }

    /// The error for a connection that ended before the server sent a byte.
    fn ended_unheard(
        &self,
        ended: Result<Result<(), hyper::Error>, tokio::task::JoinError>,
        failure: Option<TransportFailure>,
    ) -> TunnelError {
        let server = self.server.clone();
        let reason = match (failure, ended) {
            (Some(TransportFailure::Alert(alert)), _) => {
                return TunnelError::Rejected { server, reason: alert_meaning(alert) };
            }
            (Some(TransportFailure::Io(io)), _) => format!("the connection broke before the server answered ({io})"),
            (None, Ok(Ok(()))) => "the server closed the connection before it answered".to_owned(),
            (None, Ok(Err(error))) => error.to_string(),
            (None, Err(error)) => error.to_string(),
        };
        TunnelError::Http2 { server, reason }
    }

    fn tls_error(&self, error: &std::io::Error) -> TunnelError {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        let server = self.server.clone();
        let name = self.server_name.to_str();
        match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(NotValidForName | NotValidForNameContext { .. })) => {
                TunnelError::Certificate {
                    server,
                    reason: format!(
                        "its certificate is not valid for the name {name}; set server_name to the name it carries or reissue it with fluidity-certs --san"
                    ),
                }
            }
            Some(rustls::Error::InvalidCertificate(reason)) => TunnelError::Certificate {
                server,
                reason: format!(
                    "its certificate is not trusted ({reason:?}); check tls.ca points at the CA that signed it"
                ),
            },
            Some(other) => TunnelError::Tls { server, reason: other.to_string() },
            None => TunnelError::Tls { server, reason: error.to_string() },
        }
    }
}

/// Aborts a task when dropped, unless disarmed first.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl AbortOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// What a server's TLS alert means for this agent, and what to do about it.
fn alert_meaning(alert: rustls::AlertDescription) -> String {
    use rustls::AlertDescription as A;
    match alert {
        A::CertificateExpired => {
            "its TLS alert says this agent's client certificate has expired (or is not valid yet); issue a new one with fluidity-certs and send SIGHUP".into()
        }
        A::UnknownCA => {
            "its TLS alert says this agent's client certificate is from a CA it does not trust; use a client certificate issued by the server's CA".into()
        }
        A::CertificateRequired => "its TLS alert says a client certificate is required; set tls.cert and tls.key".into(),
        A::DecryptError => {
            "its TLS alert says this agent's client certificate fails verification (a CA of the same name but another key?)".into()
        }
        A::CertificateRevoked => "its TLS alert says this agent's client certificate was revoked".into(),
        A::BadCertificate | A::UnsupportedCertificate | A::CertificateUnknown => {
            format!("its TLS alert says this agent's client certificate is not acceptable ({alert:?})")
        }
        other => format!("it ended the TLS session with the alert {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for failures in 0..40 {
            let d = backoff(failures, base, max);
            let ceiling = base.saturating_mul(1 << failures.saturating_sub(1).min(20)).min(max);
            assert!(d >= ceiling / 2 && d <= ceiling, "{failures}: {d:?} vs {ceiling:?}");
        }
        assert!(backoff(30, base, max) <= max);
        let samples: std::collections::HashSet<_> = (0..20).map(|_| backoff(5, base, max)).collect();
        assert!(samples.len() > 1, "jitter must vary");
    }
}
