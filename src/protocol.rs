//! The contracts between components, in one place so that a rename on one
//! side cannot compile without the other: the control API's JSON (what the
//! Lambda functions answer and the agent reads), the header naming a failed
//! dial (the server sets it, the agent maps it to SOCKS replies) and the CloudWatch metric
//! names and dimensions (what the server publishes and Sleep queries).
//! Always built; plain data with serde, no component code.

use serde::{Deserialize, Serialize};

/// The control API's routes (API Gateway resource paths, relative to the stage).
pub mod routes {
    /// `POST`: desired 0 → 1, then waits (bounded) until the task runs with an IP.
    pub const WAKE: &str = "wake";
    /// `GET`: where the server is in its life.
    pub const STATUS: &str = "status";
    /// `POST`: desired → 0.
    pub const KILL: &str = "kill";
}

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Desired 0 and no task.
    Stopped,
    /// Desired 1; no task running with a public IP yet.
    Starting,
    /// A task runs and has a public IP.
    Running,
    /// Desired 0 while a task is still there.
    Stopping,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /status`'s answer, also inside Wake's and Kill's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub state: State,
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
    pub task_arn: Option<String>,
    pub public_ip: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
}

/// `POST /wake` and `POST /kill`: whether the desired count changed, and the status after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub action: String,
    pub changed: bool,
    pub status: Status,
}

/// An error answer of the control API (`{"error": …, "message": …}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

/// Header on the server's answer to a CONNECT it could not complete: the
/// kind of dial failure (`dns`, `refused`, `timeout`, `denied`, `other`),
/// which the agent turns into a SOCKS reply code.
pub const DIAL_ERROR_HEADER: &str = "x-fluidity-dial-error";

/// The server's activity metrics in CloudWatch.
pub mod metrics {
    /// The namespace unless configured otherwise (the templates' `MetricsNamespace`).
    pub const DEFAULT_NAMESPACE: &str = "Fluidity";
    /// Open agent connections (a gauge).
    pub const ACTIVE_CONNECTIONS: &str = "ActiveConnections";
    /// Unix seconds of the last byte through any stream (or the server's start).
    pub const LAST_ACTIVITY: &str = "LastActivityEpochSeconds";
    /// Dimension: the ECS service name.
    pub const SERVICE_DIMENSION: &str = "ServiceName";
    /// Dimension: the ECS cluster name.
    pub const CLUSTER_DIMENSION: &str = "ClusterName";
    /// How often the server publishes by default (the Fargate task keeps it).
    pub const DEFAULT_INTERVAL_SECS: u64 = 60;
    /// How late a standard-resolution datapoint may become visible to
    /// GetMetricData; the idle window must cover it plus one interval, or
    /// Sleep sees a busy server's newest activity as too old.
    pub const VISIBILITY_DELAY_SECS: u64 = 180;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_with_lowercase_states() {
        let status = Status {
            state: State::Running,
            desired: 1,
            running: 1,
            pending: 0,
            task_arn: Some("arn:aws:ecs:us-east-1:123456789012:task/c/1".into()),
            public_ip: Some("203.0.113.7".into()),
            started_at: None,
        };
        let text = serde_json::to_string(&status).unwrap();
        assert!(text.contains(r#""state":"running""#), "{text}");
        assert_eq!(serde_json::from_str::<Status>(&text).unwrap(), status);
        assert!(serde_json::from_str::<Status>(&text.replace("running\"", "sideways\"")).is_err());
    }
}
