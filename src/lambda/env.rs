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

/// Port the server listens on (the port Wake opens to the caller).
pub const SERVER_PORT: &str = "SERVER_PORT";
/// Security group Wake admits the caller's address to; `none` or empty when
/// the stack admits one fixed CIDR (the functions then never touch it).
pub const CALLER_INGRESS_GROUP: &str = "CALLER_INGRESS_GROUP";
/// Route 53 hosted zone holding [`DNS_NAME`] (both set, or neither).
pub const DNS_ZONE_ID: &str = "DNS_ZONE_ID";
/// The server's name: an A record pointed at the running task's public IP.
pub const DNS_NAME: &str = "DNS_NAME";

/// Every variable the functions read.
pub const ALL: [&str; 9] = [
    CLUSTER_NAME,
    SERVICE_NAME,
    IDLE_THRESHOLD_MINUTES,
    METRICS_NAMESPACE,
    WAKE_WAIT_SECONDS,
    SERVER_PORT,
    CALLER_INGRESS_GROUP,
    DNS_ZONE_ID,
    DNS_NAME,
];

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
    /// The server's port (443 unless the stack says otherwise).
    pub server_port: u16,
    /// The group Wake admits callers to, in `caller` mode.
    pub caller_ingress_group: Option<String>,
    /// The optional server name.
    pub dns: Option<ServerName>,
}

/// A Route 53 record the functions keep pointed at the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerName {
    pub zone_id: String,
    pub name: String,
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
        let server_port =
            match env.get(SERVER_PORT) {
                None => 443,
                Some(text) => text.trim().parse::<u16>().ok().filter(|p| *p > 0).ok_or(EnvError {
                    name: SERVER_PORT,
                    problem: format!("`{text}` is not a port from 1 to 65535"),
                })?,
            };
        let set = |name| env.get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let caller_ingress_group = set(CALLER_INGRESS_GROUP).filter(|g| g != "none");
        if let Some(group) = &caller_ingress_group
            && !group.starts_with("sg-")
        {
            let problem = format!("`{group}` is not a security group id (sg-...) nor `none`");
            return Err(EnvError { name: CALLER_INGRESS_GROUP, problem });
        }
        let dns = match (set(DNS_ZONE_ID), set(DNS_NAME)) {
            (Some(zone_id), Some(name)) => Some(ServerName { zone_id, name: name.trim_end_matches('.').into() }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(EnvError { name: DNS_NAME, problem: "missing while DNS_ZONE_ID is set".into() });
            }
            (None, Some(_)) => {
                return Err(EnvError { name: DNS_ZONE_ID, problem: "missing while DNS_NAME is set".into() });
            }
        };
        Ok(Self {
            server_port,
            caller_ingress_group,
            dns,
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

    #[test]
    fn port_ingress_and_name() {
        let base = [(CLUSTER_NAME, "c"), (SERVICE_NAME, "s")];
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            Settings::from_env(&env(&pairs))
        };
        let plain = with(&[]).unwrap();
        assert_eq!((plain.server_port, plain.caller_ingress_group, plain.dns), (443, None, None));
        assert_eq!(with(&[(SERVER_PORT, "8443")]).unwrap().server_port, 8443);
        assert_eq!(with(&[(SERVER_PORT, "0")]).unwrap_err().name, SERVER_PORT);
        assert_eq!(with(&[(CALLER_INGRESS_GROUP, "none")]).unwrap().caller_ingress_group, None);
        assert_eq!(with(&[(CALLER_INGRESS_GROUP, "sg-1")]).unwrap().caller_ingress_group.as_deref(), Some("sg-1"));
        assert_eq!(with(&[(CALLER_INGRESS_GROUP, "default")]).unwrap_err().name, CALLER_INGRESS_GROUP);
        let named = with(&[(DNS_ZONE_ID, "Z1"), (DNS_NAME, "t.example.com.")]).unwrap().dns.unwrap();
        assert_eq!((named.zone_id.as_str(), named.name.as_str()), ("Z1", "t.example.com"));
        assert_eq!(with(&[(DNS_ZONE_ID, "Z1"), (DNS_NAME, "")]).unwrap_err().name, DNS_NAME);
    }
}
