//! The server's lifecycle through the control API (API Gateway → the Lambda
//! functions): wake it and wait, with progress, until it runs and has a public
//! IP; watch the tunnel and find the server again when it moves; when the
//! control plane has put it to sleep (idle, or the nightly stop) keep the
//! agent running and wake the server on the next client request; stop it on
//! exit.
//!
//! The API has a monthly quota, so calls are few: `/wake` itself waits
//! (server-side, under API Gateway's 29 s limit) until the task runs, a poll
//! whose answer did not change doubles the next pause (up to
//! [`MAX_PAUSE_FACTOR`] × `poll_interval`), and a spent quota (HTTP 429
//! "Limit Exceeded") is final. A refused API key is final too (one line
//! naming where the key came from).

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::LifecycleConfig;
use super::pool::Pool;
use crate::http_client::OneShot;
use crate::protocol::{Change, State, Status, routes};
use crate::telemetry::to_stderr;

/// How long one control API call may take (`/wake` waits up to about 20 s
/// server-side; API Gateway gives up at 29 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(35);

/// Unchanged answers double the pause between polls up to this many poll intervals.
pub const MAX_PAUSE_FACTOR: u32 = 60;

/// Why the server could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(
        "the control API refused the API key from {key_source} (HTTP {status}); use the key of the deployed stack (fluidity-deploy --env <env> api-key)"
    )]
    Forbidden { key_source: String, status: u16 },
    #[error(
        "the control API's request quota is used up (HTTP 429 Limit Exceeded): wake and kill will not work until the usage plan's period resets; raise ApiQuotaPerMonth and deploy, and stop a running server meanwhile with: aws ecs update-service --cluster <ClusterName> --service <ServiceName> --desired-count 0 (fluidity-deploy --env <env> outputs shows both)"
    )]
    QuotaExceeded,
    #[error(
        "the server was not ready after {after:?} (last state seen: {last}); raise lifecycle.wake_timeout or look at the ECS service"
    )]
    WakeTimeout { after: Duration, last: String },
    #[error("control API {url}: {reason}")]
    Call { url: String, reason: String },
    #[error("control API {url} answered HTTP {status}: {message}")]
    Refused { url: String, status: u16, message: String },
    #[error("control API {url} answered something that is not a status: {reason}")]
    BadAnswer { url: String, reason: String },
    #[error("stopped while waiting for the server")]
    Cancelled,
}

impl LifecycleError {
    /// Worth trying again at the next poll (network trouble, throttling, 5xx).
    fn is_transient(&self) -> bool {
        match self {
            Self::Call { .. } => true,
            Self::Refused { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

impl Status {
    /// The phase a person waiting would want to see.
    pub fn phase(&self) -> &'static str {
        match self.state {
            State::Running => "connecting",
            State::Starting if self.running > 0 => "starting",
            State::Starting => "provisioning",
            State::Stopping => "stopping",
            State::Stopped => "waking",
        }
    }

    /// Where the server listens, once it runs and has an address.
    pub fn address(&self, port: u16) -> Option<SocketAddr> {
        let ip: IpAddr = self.public_ip.as_deref()?.parse().ok()?;
        (self.state == State::Running).then_some(SocketAddr::new(ip, port))
    }

    fn describe(&self) -> String {
        format!("{}, desired {}, running {}, pending {}", self.state, self.desired, self.running, self.pending)
    }
}

impl LifecycleConfig {
    /// Where to dial the server `status` reports, once it runs with an
    /// address: its IP at `server_port`. With `server_host` the name goes
    /// in SNI only: the control API's answer is current, while a record
    /// just changed may not resolve yet (or a resolver may still keep the
    /// previous address, or its absence, for a while).
    pub fn target(&self, status: &Status) -> Option<String> {
        status.address(self.server_port).map(|address| address.to_string())
    }
}

/// The next pause: doubled after an unchanged answer (capped), the base after a change.
fn next_pause(pause: Duration, base: Duration, unchanged: bool) -> Duration {
    if unchanged { pause.saturating_mul(2).min(base.saturating_mul(MAX_PAUSE_FACTOR)) } else { base }
}

/// A client of the control API.
#[derive(Clone)]
pub struct ControlApi {
    config: LifecycleConfig,
    client: OneShot,
}

impl ControlApi {
    /// A client that calls the API directly or through `upstream`'s proxy.
    pub fn new(config: &LifecycleConfig, upstream: &crate::upstream::Upstream) -> anyhow::Result<Self> {
        let client = OneShot::new()
            .map_err(|e| anyhow::anyhow!("building the control API client: {e}"))?
            .with_upstream(upstream.clone());
        Ok(Self { config: config.clone(), client })
    }

    /// `POST /wake`: desired 1 if it was 0; answers once the task runs (or
    /// after the function's bounded wait).
    pub async fn wake(&self) -> Result<Status, LifecycleError> {
        self.call("POST", routes::WAKE, true).await
    }

    /// `GET /status`.
    pub async fn status(&self) -> Result<Status, LifecycleError> {
        self.call("GET", routes::STATUS, false).await
    }

    /// `POST /kill`: desired 0.
    pub async fn kill(&self) -> Result<Status, LifecycleError> {
        self.call("POST", routes::KILL, true).await
    }

    async fn call(&self, method: &str, path: &str, nested: bool) -> Result<Status, LifecycleError> {
        super::status::API_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = format!("{}/{path}", self.config.api_url);
        let call_error = |reason: String| LifecycleError::Call { url: url.clone(), reason };
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| call_error(e.to_string()))?;
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let request = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", host)
            .header("x-api-key", self.config.api_key.expose())
            .header("accept", "application/json")
            .header("user-agent", concat!("fluidity-agent/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::new()))
            .map_err(|e| call_error(e.to_string()))?;
        let (status, body) = tokio::time::timeout(CALL_TIMEOUT, self.client.send(request))
            .await
            .map_err(|_| call_error(format!("no answer within {CALL_TIMEOUT:?}")))?
            .map_err(|e| call_error(e.to_string()))?;
        if status == 401 || status == 403 {
            return Err(LifecycleError::Forbidden { key_source: self.config.key_source.clone(), status });
        }
        if status != 200 {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| body.chars().take(200).collect());
            // API Gateway answers a spent usage-plan quota with 429 "Limit
            // Exceeded", and throttling with 429 "Too Many Requests"
            // ("Gateway response types", API Gateway Developer Guide).
            if status == 429 && message.eq_ignore_ascii_case("Limit Exceeded") {
                return Err(LifecycleError::QuotaExceeded);
            }
            return Err(LifecycleError::Refused { url, status, message });
        }
        let bad = |e: serde_json::Error| LifecycleError::BadAnswer { url: url.clone(), reason: e.to_string() };
        if nested {
            serde_json::from_str::<Change>(&body).map(|change| change.status).map_err(bad)
        } else {
            serde_json::from_str::<Status>(&body).map_err(bad)
        }
    }
}

/// Shows what the wait is doing: a redrawn line on a terminal, log lines otherwise.
struct Progress {
    tty: bool,
    started: Instant,
    last_phase: Option<&'static str>,
    last_log: Instant,
}

impl Progress {
    fn new() -> Self {
        let now = Instant::now();
        Self { tty: std::io::stderr().is_terminal(), started: now, last_phase: None, last_log: now }
    }

    fn show(&mut self, phase: &'static str) {
        let elapsed = self.started.elapsed().as_secs();
        if self.tty {
            const SPINNER: [char; 4] = ['|', '/', '-', '\\'];
            let frame = SPINNER[(self.started.elapsed().as_millis() / 250 % 4) as usize];
            to_stderr(format_args!("\r\x1b[2K{frame} fluidity: {phase} the server… {elapsed}s"));
        } else if self.last_phase != Some(phase) || self.last_log.elapsed() >= Duration::from_secs(15) {
            info!(phase, elapsed_s = elapsed, "waiting for the server");
            self.last_log = Instant::now();
        }
        self.last_phase = Some(phase);
    }

    fn done(&self, address: &str) {
        if self.tty {
            to_stderr(format_args!(
                "\r\x1b[2Kfluidity: server up at {address} after {}s\n",
                self.started.elapsed().as_secs()
            ));
        }
        info!(server = %address, elapsed_s = self.started.elapsed().as_secs(), "server is running");
    }

    /// The wait ended without a server (Ctrl-C, an error): the line goes,
    /// so what is printed next starts on a clean line.
    fn abandon(&self) {
        if self.tty {
            to_stderr(format_args!("\r\x1b[2K"));
        }
    }
}

/// Wakes the server and waits until it runs with a public IP; returns where
/// to dial (`host:port`). Every call is `/wake` (idempotent; it waits
/// server-side, and admits this network's address in `caller` mode), so a
/// start within a minute costs about three calls.
pub async fn bring_up(api: &ControlApi, shutdown: &CancellationToken) -> Result<String, LifecycleError> {
    let config = &api.config;
    let mut progress = Progress::new();
    progress.show("waking");
    let deadline = Instant::now() + config.wake_timeout;
    let mut last: Option<Status> = None;
    let mut pause = config.poll_interval;
    let outcome = loop {
        // The call waits server-side (up to WAKE_WAIT_SECONDS): the line keeps
        // moving meanwhile, and Ctrl-C does not wait for the answer.
        let answer = tokio::select! {
            _ = shutdown.cancelled() => break Err(LifecycleError::Cancelled),
            answer = api.wake() => answer,
            never = keep_drawing(&mut progress) => match never {},
        };
        match answer {
            Ok(status) => {
                if let Some(address) = config.target(&status) {
                    progress.done(&address);
                    break Ok(address);
                }
                progress.show(status.phase());
                pause = next_pause(pause, config.poll_interval, last.as_ref() == Some(&status));
                last = Some(status);
            }
            Err(error) if error.is_transient() => {
                warn!(%error, "control API call failed, retrying");
                pause = next_pause(pause, config.poll_interval, true);
            }
            Err(error) => break Err(error),
        }
        if Instant::now() >= deadline {
            let last = last.as_ref().map_or_else(|| "no answer from the control API".into(), Status::describe);
            break Err(LifecycleError::WakeTimeout { after: config.wake_timeout, last });
        }
        let pause = pause.min(deadline.saturating_duration_since(Instant::now()));
        tokio::select! {
            _ = shutdown.cancelled() => break Err(LifecycleError::Cancelled),
            _ = tokio::time::sleep(pause) => {}
            never = keep_drawing(&mut progress) => match never {},
        }
    };
    if outcome.is_err() {
        progress.abandon();
    }
    outcome
}

/// Redraws the terminal line until dropped (nothing off a terminal).
async fn keep_drawing(progress: &mut Progress) -> std::convert::Infallible {
    loop {
        if progress.tty {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if let Some(phase) = progress.last_phase {
                progress.show(phase);
            }
        } else {
            std::future::pending::<()>().await;
        }
    }
}

/// While the agent runs. When no tunnel connection has been up for a poll
/// interval it asks where the server is: it follows a moved server to its
/// new address; when the server runs where the agent dials but every
/// connection attempt times out (the laptop moved to a network whose
/// address the server's security group does not admit) it calls `/wake`
/// once, which admits the current address; when the control plane stopped
/// it (idle, nightly) the pool goes dormant and the next client request
/// wakes it (`rewake`, default on), so a stopped server costs nothing until
/// it is used. Unchanged answers back off; a spent quota stops the polling.
pub async fn follow(api: ControlApi, pool: Arc<Pool>, shutdown: CancellationToken) {
    let config = api.config.clone();
    let mut down_since: Option<Instant> = None;
    // Whether this outage already had its one `/wake` for an unreachable server.
    let mut admitted = false;
    let mut pause = config.poll_interval;
    let mut last: Option<Status> = None;
    loop {
        if pool.is_dormant() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = pool.demanded() => {}
            }
            if !wake_on_demand(&api, &pool, &shutdown).await {
                return;
            }
            (down_since, pause, last) = (None, config.poll_interval, None);
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        if pool.connections_up() > 0 {
            (down_since, pause, last, admitted) = (None, config.poll_interval, None, false);
            continue;
        }
        let since = *down_since.get_or_insert_with(Instant::now);
        if since.elapsed() < config.poll_interval {
            continue;
        }
        let status = match api.status().await {
            Ok(status) => status,
            Err(LifecycleError::QuotaExceeded) => {
                warn!(error = %LifecycleError::QuotaExceeded, "no more control API calls from this agent");
                pool.stop_waking(&LifecycleError::QuotaExceeded.to_string());
                return;
            }
            Err(error) => {
                warn!(%error, "tunnel down and the control API did not answer");
                pause = next_pause(pause, config.poll_interval, true);
                continue;
            }
        };
        pause = next_pause(pause, config.poll_interval, last.as_ref() == Some(&status));
        if let Some(address) = config.target(&status) {
            if pool.server() != address {
                info!(from = %pool.server(), to = %address, "server moved, reconnecting to its new address");
                pool.set_server(&address);
                pause = config.poll_interval;
            } else if !admitted && matches!(pool.last_error(), Some(super::pool::TunnelError::Timeout { .. })) {
                admitted = true;
                info!(server = %address, "the server runs but connections to it time out; asking /wake to admit this network's address");
                match api.wake().await {
                    Ok(woken) => pool.set_server(&config.target(&woken).unwrap_or(address)),
                    Err(LifecycleError::QuotaExceeded) => {
                        pool.stop_waking(&LifecycleError::QuotaExceeded.to_string());
                        return;
                    }
                    Err(error) => warn!(%error, "the control API did not admit this address"),
                }
                pause = config.poll_interval;
            } else if last.as_ref() != Some(&status) {
                warn!(server = %address, "the server runs but the tunnel cannot reach it (with AllowedIngressCidr=caller a wake admits this address; with a fixed CIDR, is it still yours? is the client certificate valid?)");
            }
        } else if status.desired > 0 {
            info!(phase = status.phase(), "tunnel down, the server is being replaced; waiting for it");
        } else {
            info!(state = %status.state, "the server was put to sleep; the next request wakes it");
            pool.set_dormant(config.wake_timeout);
        }
        last = Some(status);
    }
}

/// A client asked for the dormant server: wakes it (when `rewake` is on) and
/// points the pool at it, or tells the waiting requests why not. False when
/// the agent must stop calling the API (its quota is spent).
async fn wake_on_demand(api: &ControlApi, pool: &Pool, shutdown: &CancellationToken) -> bool {
    if !api.config.rewake {
        pool.wake_failed("the server was stopped (idle or the nightly stop) and lifecycle.rewake is off; restart the agent to wake it");
        return true;
    }
    info!("a request arrived for the sleeping server, waking it");
    match bring_up(api, shutdown).await {
        Ok(address) => {
            pool.woke(&address);
            true
        }
        Err(LifecycleError::Cancelled) => false,
        Err(LifecycleError::QuotaExceeded) => {
            warn!(error = %LifecycleError::QuotaExceeded, "no more control API calls from this agent");
            pool.stop_waking(&LifecycleError::QuotaExceeded.to_string());
            false
        }
        Err(error) => {
            warn!(%error, "could not wake the server; the next request tries again");
            pool.wake_failed(&format!("the server is asleep and waking it failed: {error}"));
            // Whatever the failed wake started is stopped again, as at start-up.
            if api.config.kill_on_exit && !matches!(error, LifecycleError::Forbidden { .. }) {
                kill_on_exit(api).await;
            }
            true
        }
    }
}

/// Stops the server on exit, bounded in time; failures are only logged.
pub async fn kill_on_exit(api: &ControlApi) {
    match tokio::time::timeout(CALL_TIMEOUT, api.kill()).await {
        Ok(Ok(status)) => info!(state = %status.state, "server stopped (kill_on_exit)"),
        Ok(Err(error)) => warn!(%error, "could not stop the server on exit"),
        Err(_) => warn!("could not stop the server on exit: the control API did not answer in time"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: State, running: i32, ip: Option<&str>) -> Status {
        Status {
            state,
            desired: 1,
            running,
            pending: 0,
            task_arn: None,
            public_ip: ip.map(str::to_string),
            started_at: None,
        }
    }

    #[test]
    fn phases_and_addresses() {
        assert_eq!(status(State::Stopped, 0, None).phase(), "waking");
        assert_eq!(status(State::Starting, 0, None).phase(), "provisioning");
        assert_eq!(status(State::Starting, 1, None).phase(), "starting");
        assert_eq!(status(State::Running, 1, Some("203.0.113.7")).phase(), "connecting");
        let running = status(State::Running, 1, Some("203.0.113.7"));
        assert_eq!(running.address(8443), Some("203.0.113.7:8443".parse().unwrap()));
        assert_eq!(status(State::Starting, 1, Some("203.0.113.7")).address(8443), None);
        assert_eq!(status(State::Running, 1, Some("not an ip")).address(8443), None);
    }

    #[test]
    fn unchanged_answers_back_off_to_the_cap() {
        let base = Duration::from_secs(5);
        let mut pause = base;
        let mut total = Duration::ZERO;
        let mut calls = 0;
        // Ten minutes of a server that answers the same every time.
        while total < Duration::from_secs(600) {
            total += pause;
            calls += 1;
            pause = next_pause(pause, base, true);
        }
        assert!(calls <= 10, "{calls} calls in ten minutes");
        assert_eq!(pause, base * MAX_PAUSE_FACTOR);
        assert_eq!(next_pause(pause, base, false), base, "a change starts over");
    }
}
