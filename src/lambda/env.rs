//! Lambda configuration, from environment variables only. Each name is defined
//! here once; `cloudformation/lambda.yaml` sets exactly these (a test compares).

use std::collections::HashMap;
use std::time::Duration;

/// ECS cluster holding the server's service.
pub const CLUSTER_NAME: &str = "CLUSTER_NAME";
/// ECS service running the server.
pub const SERVICE_NAME: &str = "SERVICE_NAME";
/// Minutes without connections or activity before Sleep scales to 0.
pub const IDLE_THRESHOLD_MINUTES: &str = "IDLE_THRESHOLD_MINUTES";
/// CloudWatch namespace the server publishes to.
pub const METRICS_NAMESPACE: &str = "METRICS_NAMESPACE";

/// Seconds Wake waits for the task to run with a public IP before it answers
/// (0 to 25: API Gateway ends an integration at 29 s).
pub const WAKE_WAIT_SECONDS: &str = "WAKE_WAIT_SECONDS";

/// Every variable the functions read.
pub const ALL: [&str; 5] = [CLUSTER_NAME, SERVICE_NAME, IDLE_THRESHOLD_MINUTES, METRICS_NAMESPACE, WAKE_WAIT_SECONDS];

/// The longest Wake may wait (API Gateway's integration timeout is 29 s,
/// "Quotas for configuring and running a REST API in API Gateway").
pub const MAX_WAKE_WAIT_SECONDS: u64 = 25;

/// Where variables come from: the process, or a map in tests.
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// What the functions need, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub cluster: String,
    pub service: String,
    pub idle_threshold: Duration,
    pub namespace: String,
    /// How long Wake waits for the task to run before it answers.
    pub wake_wait: Duration,
    /// How long an API call may take in all, AWS retries included
    /// ([`API_BUDGET`]; shorter in tests).
    pub api_budget: Duration,
}

/// API Gateway ends a Lambda integration after 29 s ("Amazon API Gateway
/// quotas", REST APIs: integration timeout 50 ms to 29 s) and answers 504
/// itself, without the function's reason. The functions answer first.
pub const API_BUDGET: Duration = Duration::from_secs(27);

/// A missing or invalid variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {name}: {problem}")]
pub struct EnvError {
    pub name: &'static str,
    pub problem: String,
}

impl Settings {
    /// Reads and validates every variable.
    pub fn from_env(env: &dyn Env) -> Result<Self, EnvError> {
        let required = |name: &'static str| {
            env.get(name).filter(|v| !v.trim().is_empty()).ok_or(EnvError { name, problem: "missing".into() })
        };
        let minutes = match env.get(IDLE_THRESHOLD_MINUTES) {
            None => 15,
            Some(text) => text.trim().parse::<u64>().ok().filter(|m| (1..=1440).contains(m)).ok_or(EnvError {
                name: IDLE_THRESHOLD_MINUTES,
                problem: format!("`{text}` is not a number of minutes from 1 to 1440"),
            })?,
        };
        let wake_wait = match env.get(WAKE_WAIT_SECONDS) {
            None => 20,
            Some(text) => text.trim().parse::<u64>().ok().filter(|s| *s <= MAX_WAKE_WAIT_SECONDS).ok_or(EnvError {
                name: WAKE_WAIT_SECONDS,
                problem: format!("`{text}` is not a number of seconds from 0 to {MAX_WAKE_WAIT_SECONDS}"),
            })?,
        };
        Ok(Self {
            wake_wait: Duration::from_secs(wake_wait),
            api_budget: API_BUDGET,
            cluster: required(CLUSTER_NAME)?,
            service: required(SERVICE_NAME)?,
            idle_threshold: Duration::from_secs(minutes * 60),
            namespace: env.get(METRICS_NAMESPACE).unwrap_or_else(|| crate::protocol::metrics::DEFAULT_NAMESPACE.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reads_and_validates() {
        let ok = Settings::from_env(&env(&[(CLUSTER_NAME, "c"), (SERVICE_NAME, "s"), (IDLE_THRESHOLD_MINUTES, "5")]))
            .unwrap();
        assert_eq!(ok.idle_threshold, Duration::from_secs(300));
        assert_eq!(ok.namespace, "Fluidity");
        let missing = Settings::from_env(&env(&[(CLUSTER_NAME, "c")])).unwrap_err();
        assert_eq!(missing.name, SERVICE_NAME);
        let bad =
            Settings::from_env(&env(&[(CLUSTER_NAME, "c"), (SERVICE_NAME, "s"), (IDLE_THRESHOLD_MINUTES, "soon")]));
        assert_eq!(bad.unwrap_err().name, IDLE_THRESHOLD_MINUTES);
        assert_eq!(ok.wake_wait, Duration::from_secs(20), "the default");
        let base = [(CLUSTER_NAME, "c"), (SERVICE_NAME, "s")];
        let with = |wait: &str| Settings::from_env(&env(&[base[0], base[1], (WAKE_WAIT_SECONDS, wait)]));
        assert_eq!(with("0").unwrap().wake_wait, Duration::ZERO);
        assert_eq!(with("25").unwrap().wake_wait, Duration::from_secs(25));
        assert_eq!(with("26").unwrap_err().name, WAKE_WAIT_SECONDS, "beyond API Gateway's limit");
        assert_eq!(with("soon").unwrap_err().name, WAKE_WAIT_SECONDS);
    }
}
