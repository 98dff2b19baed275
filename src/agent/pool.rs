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

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::AgentConfig;
use super::config::TunnelSettings;
use super::dial::Connector;
use super::http2::{Ended, Sender};

/// While the server stays unreachable, a reminder is logged this often.
const REMINDER_EVERY: Duration = Duration::from_secs(60);

/// After the upstream proxy refused this agent's credentials, a slot tries
/// again only this long after (or at SIGHUP): quick retries with a wrong
/// password would lock a directory account behind the proxy.
const AUTH_RETRY: Duration = Duration::from_secs(300);

/// Why no tunnel connection could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TunnelError {
    #[error("cannot reach the Fluidity server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("timed out after {after:?} connecting to the Fluidity server at {server} ({step})")]
    Timeout { server: String, after: Duration, step: &'static str },
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
    #[error("{error}")]
    Upstream { server: String, error: crate::upstream::UpstreamError },
    #[error(
        "the network is intercepting TLS: the certificate presented for the Fluidity server at {server} was issued by {issuer}, not by the Fluidity CA; mutual TLS cannot pass an intercepting proxy, so ask the network's owners for a TLS-inspection bypass for the server's address (or check tls.ca if this is your own CA)"
    )]
    Intercepted { server: String, issuer: String },
    #[error("the tunnel to the Fluidity server is down and reconnecting ({last}); retry shortly")]
    Down { last: String },
    #[error("{reason}")]
    Asleep { reason: String },
}

impl TunnelError {
    /// True when retrying cannot help until the configuration changes.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Certificate { .. } | Self::NoH2 { .. } | Self::Intercepted { .. })
            || self.is_proxy_authentication()
    }

    /// The upstream proxy refused this agent's credentials.
    pub fn is_proxy_authentication(&self) -> bool {
        matches!(self, Self::Upstream { error, .. } if error.is_authentication())
    }
}

/// One connection slot: the live connection's id and sender, if any.
type Slot = RwLock<Option<(u64, Sender)>>;

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
    /// Failed attempts since a connection was last up, and when that was
    /// last said (a reminder every [`REMINDER_EVERY`]).
    reminder: Mutex<(u64, tokio::time::Instant)>,
    opened: AtomicU64,
    connector: RwLock<Connector>,
    settings: TunnelSettings,
    /// Wakes supervisors out of their backoff (the server moved).
    kick: tokio::sync::Notify,
    /// Bumped to drop every live connection and dial again (the agent was
    /// paused: after a suspend, every TCP connection is likely dead).
    renew: watch::Sender<u64>,
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
            reminder: Mutex::new((0, tokio::time::Instant::now())),
            opened: AtomicU64::new(0),
            connector: RwLock::new(connector),
            settings: config.tunnel.clone(),
            kick: tokio::sync::Notify::new(),
            renew: watch::Sender::new(0),
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

    /// Each live connection's receive window per stream, in bytes (they
    /// grow while readers keep up over a long path: [`super::http2::window`]).
    pub fn receive_windows(&self) -> Vec<u32> {
        self.shared.slots.iter().filter_map(live).map(|lease| lease.sender.receive_window()).collect()
    }

    /// Replaces the TLS material used for new connections (certificate reload).
    pub fn set_tls(&self, config: &AgentConfig) -> Result<(), crate::tls::TlsError> {
        let mut fresh = Connector::new(config)?;
        let mut connector = self.shared.connector.write().unwrap_or_else(|e| e.into_inner());
        // Keep the current address: the server may have moved since start-up.
        fresh.server = connector.server.clone();
        *connector = fresh;
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

    /// Drops every live connection and dials again at once: after the agent
    /// was paused (a suspended laptop), connections that look open are
    /// likely dead, and waiting for their pings to time out would fail the
    /// first requests.
    pub fn renew(&self) {
        self.shared.renew.send_modify(|n| *n = n.wrapping_add(1));
        *lock(&self.shared.last_error) = None;
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
    pub sender: Sender,
}

fn live(slot: &Slot) -> Option<Lease> {
    let guard = slot.read().unwrap_or_else(|e| e.into_inner());
    let (id, sender) = guard.as_ref()?;
    (!sender.is_closed()).then(|| Lease { id: *id, sender: sender.clone() })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps slot `index` connected until `stop` (dialling nothing while dormant).
async fn supervise(shared: Arc<Shared>, index: usize, stop: CancellationToken) {
    let mut failures: u32 = 0;
    // A wait other than the backoff before the next attempt (a refused proxy password).
    let mut retry_after = None;
    let mut dormant = shared.dormant.subscribe();
    let mut renew = shared.renew.subscribe();
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
                *lock(&shared.reminder) = (0, tokio::time::Instant::now());
                let id = shared.opened.fetch_add(1, Ordering::Relaxed);
                *shared.slots[index].write().unwrap_or_else(|e| e.into_inner()) = Some((id, sender));
                *shared.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                shared.bump();
                info!("tunnel connection up");
                renew.mark_unchanged();
                let mut task = connection.task;
                let ended = tokio::select! {
                    _ = stop.cancelled() => return,
                    ended = &mut task => ended,
                    _ = renew.changed() => {
                        task.abort();
                        *shared.slots[index].write().unwrap_or_else(|e| e.into_inner()) = None;
                        shared.bump();
                        info!("tunnel connection dropped after a pause, reconnecting");
                        continue;
                    }
                };
                *shared.slots[index].write().unwrap_or_else(|e| e.into_inner()) = None;
                // Ending the connection (dropping it, when a ping went
                // unanswered or after a pause) settles each stream: a
                // response that had fully arrived keeps what was received,
                // its request's body sent in full or not; any other fails
                // once its buffered bytes are read, and its tunnel's relay
                // closes both sides.
                match ended {
                    Ok(Ok(())) if connection.broken.load(Ordering::Relaxed) => {
                        warn!("tunnel connection dropped by the network or the server, reconnecting");
                    }
                    Ok(Ok(())) => info!("tunnel connection closed by the server, reconnecting"),
                    // No read or write failed: only the goodbye (HTTP/2's
                    // last flush, TLS close_notify) met a socket the server
                    // had closed first, as it does after its drain.
                    Ok(Err(Ended::Http2(error))) if error.is_io() && !connection.broken.load(Ordering::Relaxed) => {
                        info!(%error, "tunnel connection closed by the server, reconnecting");
                    }
                    Ok(Err(error)) => warn!(%error, "tunnel connection lost, reconnecting"),
                    Err(error) => warn!(%error, "tunnel connection task failed, reconnecting"),
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                report_failure(&shared, &error, failures);
                if error.is_proxy_authentication() {
                    retry_after = Some(AUTH_RETRY);
                }
                *shared.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                shared.bump();
            }
        }
        let delay = retry_after
            .take()
            .unwrap_or_else(|| backoff(failures, shared.settings.reconnect_base, shared.settings.reconnect_max));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
            _ = shared.kick.notified() => failures = 0,
        }
    }
}

/// Logs a failed attempt: a reason once (across slots), then while the
/// server stays unreachable a reminder every [`REMINDER_EVERY`] with the
/// attempt count; otherwise at debug level.
fn report_failure(shared: &Shared, error: &TunnelError, failures: u32) {
    let fresh = {
        let mut logged = lock(&shared.logged);
        if logged.len() >= 32 {
            logged.clear(); // reasons that keep changing: start over
        }
        logged.insert(error.to_string())
    };
    let reminder = {
        let mut reminder = lock(&shared.reminder);
        reminder.0 += 1;
        let due = reminder.1.elapsed() >= REMINDER_EVERY;
        if due || fresh {
            reminder.1 = tokio::time::Instant::now();
        }
        (due && !shared.slots.iter().any(|slot| live(slot).is_some())).then_some(reminder.0)
    };
    if fresh {
        warn!(%error, failures, "tunnel connection attempt failed");
    } else if let Some(attempts) = reminder {
        warn!(%error, attempts, "still cannot reach the server (attempts by all slots since the last connection); retrying");
    } else {
        debug!(%error, failures, "tunnel connection attempt failed");
    }
}

/// Exponential backoff with jitter: `base * 2^(failures-1)`, capped at `max`,
/// then a random point in its upper half. No failure yet means `base / 2`.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    let ceiling = base.saturating_mul(1u32 << exponent).min(max);
    let half = ceiling / 2;
    half + half.mul_f64(crate::http_util::jitter())
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
