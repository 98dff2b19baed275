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

/// Every variable the functions read.
pub const ALL: [&str; 4] = [CLUSTER_NAME, SERVICE_NAME, IDLE_THRESHOLD_MINUTES, METRICS_NAMESPACE];

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
}

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
        Ok(Self {
            cluster: required(CLUSTER_NAME)?,
            service: required(SERVICE_NAME)?,
            idle_threshold: Duration::from_secs(minutes * 60),
            namespace: env.get(METRICS_NAMESPACE).unwrap_or_else(|| "Fluidity".into()),
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
    }
}
