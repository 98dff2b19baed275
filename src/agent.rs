//! The Fluidity agent: a local HTTP/1.1 proxy whose every request travels as
//! an HTTP/2 stream over the tunnel ([`pool`]) to the server.
//!
//! [`Agent::bind`] opens the local listener and checks the server once;
//! [`Agent::run`] accepts until the shutdown token fires, then drains
//! (`listener`: the accept loop, its limits and timeouts).
//! With a `lifecycle` section, [`run`] first wakes the server through the
//! control API ([`lifecycle`]), follows it if it moves, and stops it on exit.

pub mod config;
mod dial;
mod handler;
pub mod http2;
pub mod lifecycle;
mod listener;
mod pac;
pub mod pool;
pub mod service;
pub mod socks;
pub mod status;
pub mod target;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{AgentArgs, AgentConfig};
use handler::Handler;
pub use listener::{HEADER_READ_TIMEOUT, MAX_WAITING_CLIENTS};
use pool::Pool;

/// A bound, not yet running agent.
pub struct Agent {
    listener: TcpListener,
    config: Arc<AgentConfig>,
    pool: Arc<Pool>,
}

impl Agent {
    /// Binds the local proxy address and builds the tunnel pool.
    pub async fn bind(config: AgentConfig) -> anyhow::Result<Self> {
        let listener = listen(&config).await?;
        Self::with_listener(listener, config)
    }

    /// Builds the tunnel pool around an already bound listener.
    pub fn with_listener(listener: TcpListener, config: AgentConfig) -> anyhow::Result<Self> {
        let pool = Pool::start(&config).context("building the agent TLS configuration")?;
        Ok(Self { listener, config: Arc::new(config), pool: Arc::new(pool) })
    }

    /// The local proxy address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        // The socket is bound; local_addr only fails on an unbound socket.
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// The tunnel pool (exposes how many connections were opened).
    pub fn pool(&self) -> Arc<Pool> {
        self.pool.clone()
    }

    /// Opens the first tunnel connection: a certificate or protocol problem is
    /// returned (it will not fix itself); an unreachable server only warns.
    pub async fn check_server(&self) -> anyhow::Result<()> {
        self.pool.first_attempt().await?;
        if self.pool.connections_up() > 0 {
            info!(server = %self.pool.server(), "tunnel to server established");
        } else {
            // The reason is the supervisor's line just before this one.
            warn!(server = %self.pool.server(), "no tunnel to the server yet; reconnecting in the background");
        }
        Ok(())
    }

    /// Serves local clients until `shutdown` fires, then drains.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        let handler = Arc::new(Handler {
            pool: self.pool.clone(),
            tracker: tracker.clone(),
            idle_timeout: self.config.idle_timeout,
            proxy_auth: self.config.proxy_auth.clone(),
            activity: Arc::default(),
            listen: self.local_addr(),
            pac_direct: Arc::new(self.config.pac_direct.clone()),
            requests: std::sync::atomic::AtomicU64::new(0),
            started: std::time::Instant::now(),
        });
        tokio::spawn(reload_on_hangup(self.config.clone(), self.pool.clone(), shutdown.clone()));
        tokio::spawn(renew_after_pauses(self.pool.clone(), shutdown.clone()));
        let limits = listener::Limits {
            max_header_bytes: self.config.tunnel.max_header_bytes as usize,
            drain_timeout: self.config.drain_timeout,
        };
        listener::accept_loop(self.listener, handler, tracker, limits, shutdown).await;
        info!("agent stopped");
        Ok(())
    }
}

/// Re-reads certificate, key and CA on SIGHUP; new tunnel connections use
/// them, established ones are untouched. Bad material is refused and logged.
async fn reload_on_hangup(config: Arc<AgentConfig>, pool: Arc<Pool>, shutdown: CancellationToken) {
    crate::shutdown::on_hangup(shutdown, || match crate::tls::TlsMaterial::load(&config.tls_sources, "tls") {
        Ok(tls) => {
            let mut next = (*config).clone();
            next.tls = tls;
            match pool.set_tls(&next) {
                Ok(()) => info!("certificates reloaded"),
                Err(error) => warn!(%error, "certificate reload refused, keeping the old material"),
            }
        }
        Err(error) => warn!(%error, "certificate reload refused, keeping the old material"),
    })
    .await;
}

async fn listen(config: &AgentConfig) -> anyhow::Result<TcpListener> {
    TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (is another proxy running there?)", config.listen))
}

/// A tick that comes this much later than asked means the process was not
/// running: a suspended laptop, a stopped process.
const PAUSE: Duration = Duration::from_secs(10);

/// Watches for the agent having been paused (suspend and resume, SIGSTOP):
/// both the monotonic clock (which a SIGSTOP does not stop) and the wall
/// clock (which a suspend moves while the monotonic clock on Linux stands
/// still) are compared with a one-second tick. After a pause every
/// connection is renewed at once instead of after its pings time out, so
/// the next request works within seconds; with a control API, the
/// lifecycle then finds the server where it is now.
async fn renew_after_pauses(pool: Arc<Pool>, shutdown: CancellationToken) {
    let tick = Duration::from_secs(1);
    loop {
        let (mono, wall) = (tokio::time::Instant::now(), std::time::SystemTime::now());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let paused = mono.elapsed().max(wall.elapsed().unwrap_or_default());
        if paused > tick + PAUSE {
            info!(paused_s = paused.as_secs(), "the agent was paused (a suspend?); renewing the tunnel connections");
            pool.renew();
        }
    }
}

/// How far `--check` got.
pub enum Checked {
    /// The whole dial path works.
    Tunnel,
    /// The control API works; the server is asleep, so no tunnel was tried.
    ApiOnly { state: String },
}

/// `--check`: really connects, printing each step on the way to the server
/// (the proxy and where it was set, its answer, TLS, the server's identity,
/// its first HTTP/2 frames) and, with a control API, one `status` call.
/// The error says at which step it stopped.
pub async fn check(config: AgentConfig) -> anyhow::Result<Checked> {
    let mut say = |mark: &str, line: String| crate::telemetry::to_stdout(format_args!("  {mark:<4}{line}\n"));
    say("ok", format!("configuration: listens on {}", config.listen));
    for note in &config.upstream.notes {
        say("note", note.clone());
    }
    let mut config = config;
    if let Some(settings) = config.lifecycle.clone() {
        let uri: http::Uri = settings.api_url.parse().context("lifecycle.api_url")?;
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let route = config.upstream.describe(uri.scheme_str() == Some("https"), host);
        say("..", format!("control API {}: to be reached {route}", settings.api_url));
        let api = lifecycle::ControlApi::new(&settings, &config.upstream)?;
        let status = api.status().await.context("control API status call")?;
        say(
            "ok",
            format!("control API: the key from {} is accepted; the server is {}", settings.key_source, status.state),
        );
        let Some(address) = settings.target(&status) else {
            return Ok(Checked::ApiOnly { state: status.state.to_string() });
        };
        config.server = address;
    }
    let connector = dial::Connector::new(&config).context("building the agent TLS configuration")?;
    connector.check(&mut say).await.context("the tunnel to the server")?;
    Ok(Checked::Tunnel)
}

/// Binds, checks the server and runs with `config` until `shutdown` fires.
/// With lifecycle settings the server is woken first (the local port is
/// taken before the wait, so a busy port fails at once), followed while the
/// agent runs, and stopped after the drain when `kill_on_exit` is on.
pub async fn run(mut config: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    for note in &config.upstream.notes {
        warn!("{note}");
    }
    let Some(settings) = config.lifecycle.clone() else {
        let agent = Agent::bind(config).await?;
        info!(addr = %agent.local_addr(), "local proxy listening");
        agent.check_server().await?;
        return agent.run(shutdown).await;
    };
    let listener = listen(&config).await?;
    let api = lifecycle::ControlApi::new(&settings, &config.upstream)?;
    let address = match lifecycle::bring_up(&api, &shutdown).await {
        Ok(address) => address,
        // Whatever was woken is stopped again, unless the API refused us.
        Err(error) => {
            let refused =
                matches!(error, lifecycle::LifecycleError::Forbidden { .. } | lifecycle::LifecycleError::QuotaExceeded);
            if settings.kill_on_exit && !refused {
                lifecycle::kill_on_exit(&api).await;
            }
            return match error {
                lifecycle::LifecycleError::Cancelled => Ok(()),
                error => Err(error.into()),
            };
        }
    };
    config.server = address;
    let agent = Agent::with_listener(listener, config)?;
    info!(addr = %agent.local_addr(), "local proxy listening");
    agent.check_server().await?;
    let pool = agent.pool();
    let follower = tokio::spawn(lifecycle::follow(api.clone(), pool.clone(), shutdown.child_token()));
    let outcome = agent.run(shutdown).await;
    follower.abort();
    // A sleeping server needs no kill (and the call would cost quota), unless
    // a request was waking it when the agent was stopped.
    if settings.kill_on_exit && (!pool.is_dormant() || pool.demand_pending()) {
        lifecycle::kill_on_exit(&api).await;
    }
    outcome
}
