//! The server's lifecycle through the control API (API Gateway → the Lambda
//! functions): wake it and wait, with progress, until it runs and has a public
//! IP; watch the tunnel and find the server again when it disappears (slept,
//! killed or replaced); stop it on exit.
//!
//! A refused API key is final (one line naming where the key came from, no
//! retries); throttling and transient failures are retried at the poll
//! interval until the wake deadline.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::LifecycleConfig;
use super::pool::Pool;
use crate::http_client::OneShot;

/// How long one control API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the server could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(
        "the control API refused the API key from {key_source} (HTTP {status}); use the key of the deployed stack (aws apigateway get-api-key --include-value --api-key <ApiKeyId>)"
    )]
    Forbidden { key_source: String, status: u16 },
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

/// The Status function's answer (also inside Wake's and Kill's).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ServerStatus {
    pub state: String,
    pub desired: i64,
    pub running: i64,
    pub pending: i64,
    pub task_arn: Option<String>,
    pub public_ip: Option<String>,
}

impl ServerStatus {
    /// The phase a person waiting would want to see.
    pub fn phase(&self) -> &'static str {
        match self.state.as_str() {
            "running" => "connecting",
            "starting" if self.running > 0 => "starting",
            "starting" => "provisioning",
            "stopping" => "stopping",
            _ => "waking",
        }
    }

    /// Where the server listens, once it runs and has an address.
    pub fn address(&self, port: u16) -> Option<SocketAddr> {
        let ip: IpAddr = self.public_ip.as_deref()?.parse().ok()?;
        (self.state == "running").then_some(SocketAddr::new(ip, port))
    }

    fn describe(&self) -> String {
        format!("{}, desired {}, running {}, pending {}", self.state, self.desired, self.running, self.pending)
    }
}

/// A client of the control API.
#[derive(Clone)]
pub struct ControlApi {
    config: LifecycleConfig,
    client: OneShot,
}

impl ControlApi {
    pub fn new(config: &LifecycleConfig) -> anyhow::Result<Self> {
        let client = OneShot::new().map_err(|e| anyhow::anyhow!("building the control API client: {e}"))?;
        Ok(Self { config: config.clone(), client })
    }

    /// `POST /wake`: desired 1 if it was 0.
    pub async fn wake(&self) -> Result<ServerStatus, LifecycleError> {
        self.call("POST", "wake", true).await
    }

    /// `GET /status`.
    pub async fn status(&self) -> Result<ServerStatus, LifecycleError> {
        self.call("GET", "status", false).await
    }

    /// `POST /kill`: desired 0.
    pub async fn kill(&self) -> Result<ServerStatus, LifecycleError> {
        self.call("POST", "kill", true).await
    }

    async fn call(&self, method: &str, path: &str, nested: bool) -> Result<ServerStatus, LifecycleError> {
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
            .map_err(call_error)?;
        if status == 401 || status == 403 {
            return Err(LifecycleError::Forbidden { key_source: self.config.key_source.clone(), status });
        }
        if status != 200 {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| body.chars().take(200).collect());
            return Err(LifecycleError::Refused { url, status, message });
        }
        let value: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| LifecycleError::BadAnswer { url: url.clone(), reason: e.to_string() })?;
        let status = if nested { value["status"].clone() } else { value };
        serde_json::from_value(status).map_err(|e| LifecycleError::BadAnswer { url, reason: e.to_string() })
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
            eprint!("\r\x1b[2K{frame} fluidity: {phase} the server… {elapsed}s");
        } else if self.last_phase != Some(phase) || self.last_log.elapsed() >= Duration::from_secs(15) {
            info!(phase, elapsed_s = elapsed, "waiting for the server");
            self.last_log = Instant::now();
        }
        self.last_phase = Some(phase);
    }

    fn done(&self, address: SocketAddr) {
        if self.tty {
            eprintln!("\r\x1b[2Kfluidity: server up at {address} after {}s", self.started.elapsed().as_secs());
        }
        info!(server = %address, elapsed_s = self.started.elapsed().as_secs(), "server is running");
    }

    fn abandon(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

/// Wakes the server and waits until it runs with a public IP; returns where to dial.
pub async fn bring_up(api: &ControlApi, shutdown: &CancellationToken) -> Result<SocketAddr, LifecycleError> {
    let config = &api.config;
    let mut progress = Progress::new();
    progress.show("waking");
    let deadline = Instant::now() + config.wake_timeout;
    let mut last: Option<ServerStatus> = None;
    let mut woken = false;
    let outcome = loop {
        let answer = if woken { api.status().await } else { api.wake().await };
        match answer {
            Ok(status) => {
                woken = !(status.desired == 0 && status.state != "running");
                if let Some(address) = status.address(config.server_port) {
                    progress.done(address);
                    break Ok(address);
                }
                progress.show(status.phase());
                last = Some(status);
            }
            Err(error) if error.is_transient() => warn!(%error, "control API call failed, retrying"),
            Err(error) => break Err(error),
        }
        if Instant::now() >= deadline {
            let last = last.as_ref().map_or_else(|| "no answer from the control API".into(), ServerStatus::describe);
            break Err(LifecycleError::WakeTimeout { after: config.wake_timeout, last });
        }
        let pause = config.poll_interval.min(deadline.saturating_duration_since(Instant::now()));
        tokio::select! {
            _ = shutdown.cancelled() => break Err(LifecycleError::Cancelled),
            _ = tokio::time::sleep(pause) => {}
            _ = spin(&mut progress, pause) => {}
        }
    };
    if outcome.is_err() {
        progress.abandon();
    }
    outcome
}

/// Redraws the terminal line while a poll interval passes.
async fn spin(progress: &mut Progress, pause: Duration) {
    if !progress.tty {
        return std::future::pending().await;
    }
    let until = Instant::now() + pause;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(phase) = progress.last_phase {
            progress.show(phase);
        }
    }
}

/// While the agent runs: when no tunnel connection has been up for a poll
/// interval, asks where the server is; follows it to a new address, or wakes
/// it again if it went to sleep (when `rewake` is on).
pub async fn follow(api: ControlApi, pool: Arc<Pool>, shutdown: CancellationToken) {
    let config = api.config.clone();
    let mut down_since: Option<Instant> = None;
    let mut warned_asleep = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.poll_interval) => {}
        }
        if pool.connections_up() > 0 {
            down_since = None;
            warned_asleep = false;
            continue;
        }
        let since = *down_since.get_or_insert_with(Instant::now);
        if since.elapsed() < config.poll_interval {
            continue;
        }
        let status = match api.status().await {
            Ok(status) => status,
            Err(error) => {
                warn!(%error, "tunnel down and the control API did not answer");
                continue;
            }
        };
        if let Some(address) = status.address(config.server_port) {
            if pool.server() != address.to_string() {
                info!(from = %pool.server(), to = %address, "server moved, reconnecting to its new address");
                pool.set_server(&address.to_string());
            }
            continue;
        }
        if status.desired > 0 {
            info!(phase = status.phase(), "tunnel down, the server is being replaced; waiting for it");
            continue;
        }
        if !config.rewake {
            if !warned_asleep {
                warn!(state = %status.state, "the server was stopped and rewake is off; restart the agent to wake it");
                warned_asleep = true;
            }
            continue;
        }
        info!(state = %status.state, "the server went away, waking it again");
        match bring_up(&api, &shutdown).await {
            Ok(address) => {
                info!(from = %pool.server(), to = %address, "server moved, reconnecting to its new address");
                pool.set_server(&address.to_string());
            }
            Err(LifecycleError::Cancelled) => return,
            Err(error) => warn!(%error, "could not bring the server back; will try again"),
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

    fn status(state: &str, running: i64, ip: Option<&str>) -> ServerStatus {
        ServerStatus {
            state: state.into(),
            desired: 1,
            running,
            pending: 0,
            task_arn: None,
            public_ip: ip.map(str::to_string),
        }
    }

    #[test]
    fn phases_and_addresses() {
        assert_eq!(status("stopped", 0, None).phase(), "waking");
        assert_eq!(status("starting", 0, None).phase(), "provisioning");
        assert_eq!(status("starting", 1, None).phase(), "starting");
        assert_eq!(status("running", 1, Some("203.0.113.7")).phase(), "connecting");
        assert_eq!(status("running", 1, Some("203.0.113.7")).address(8443), Some("203.0.113.7:8443".parse().unwrap()));
        assert_eq!(status("starting", 1, Some("203.0.113.7")).address(8443), None);
        assert_eq!(status("running", 1, Some("not an ip")).address(8443), None);
    }
}
