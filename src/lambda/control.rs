//! The control plane's operations on the ECS service: status, wake, kill and
//! sleep. Only *this* service's task is ever reported (tasks are matched by
//! their `service:NAME` group, never "the first task in the cluster").

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use aws_sdk_ecs::types::Task;
use tracing::{error, info, warn};

use super::ec2::{CallerRule, Ec2, Ec2Error};
use super::env::Settings;
use super::route53::Route53;
use super::sleep::{Decision, Observation, decide};
use crate::protocol::metrics::{ACTIVE_CONNECTIONS, CLUSTER_DIMENSION, LAST_ACTIVITY, SERVICE_DIMENSION};

/// At most this many addresses are admitted at once in `caller` mode (the
/// one waking now and the newest others; older ones are revoked).
pub const MAX_CALLERS: usize = 4;

/// Where a stopped server's name points: 192.0.2.1 (TEST-NET-1, RFC 5737)
/// is never anyone's, unlike the public IP AWS takes back from the task.
pub const PARKED: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 0, 2, 1);

/// How often Wake looks again while it waits for the task.
const WAKE_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// An AWS call that failed, by service.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("service {service} not found in cluster {cluster}")]
    ServiceNotFound { cluster: String, service: String },
    #[error("ECS: {0}")]
    Ecs(String),
    #[error("CloudWatch: {0}")]
    CloudWatch(String),
    #[error("EC2: {0}")]
    Ec2(#[from] Ec2Error),
}

impl ControlError {
    /// The `errorType` reported to callers.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::ServiceNotFound { .. } => "ServiceNotFound",
            Self::Ecs(_) => "EcsError",
            Self::CloudWatch(_) => "CloudWatchError",
            Self::Ec2(_) => "Ec2Error",
        }
    }
}

pub use crate::protocol::{State, Status};

/// The AWS clients and settings the functions share.
pub struct Control {
    pub ecs: aws_sdk_ecs::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub ec2: Ec2,
    pub route53: Route53,
    pub settings: Settings,
}

fn ecs_error(error: impl std::error::Error + Send + Sync + 'static) -> ControlError {
    ControlError::Ecs(aws_sdk_ecs::error::DisplayErrorContext(error).to_string())
}

impl Control {
    /// The service's desired count.
    async fn desired(&self) -> Result<i32, ControlError> {
        let output = self
            .ecs
            .describe_services()
            .cluster(&self.settings.cluster)
            .services(&self.settings.service)
            .send()
            .await
            .map_err(ecs_error)?;
        output
            .services()
            .iter()
            .find(|s| s.service_name() == Some(self.settings.service.as_str()) && s.status() != Some("INACTIVE"))
            .map(|s| s.desired_count())
            .ok_or_else(|| ControlError::ServiceNotFound {
                cluster: self.settings.cluster.clone(),
                service: self.settings.service.clone(),
            })
    }

    /// Tasks of this service that are not stopped.
    async fn service_tasks(&self) -> Result<Vec<Task>, ControlError> {
        let listed = self
            .ecs
            .list_tasks()
            .cluster(&self.settings.cluster)
            .service_name(&self.settings.service)
            .send()
            .await
            .map_err(ecs_error)?;
        if listed.task_arns().is_empty() {
            return Ok(vec![]);
        }
        let described = self
            .ecs
            .describe_tasks()
            .cluster(&self.settings.cluster)
            .set_tasks(Some(listed.task_arns().to_vec()))
            .send()
            .await
            .map_err(ecs_error)?;
        let group = format!("service:{}", self.settings.service);
        Ok(described
            .tasks()
            .iter()
            .filter(|t| t.group() == Some(group.as_str()) && t.last_status() != Some("STOPPED"))
            .cloned()
            .collect())
    }

    /// State, counts and the running task's public IP (the server's name,
    /// if it has one, pointed at it).
    pub async fn status(&self) -> Result<Status, ControlError> {
        let desired = self.desired().await?;
        let status = self.status_with(desired).await?;
        self.point_name(&status).await;
        Ok(status)
    }

    /// With a server name configured and the task running with a public
    /// IPv4 address, UPSERTs the name's A record to it. A failure is
    /// logged, not returned: the answer still carries the IP the agent
    /// dials (the name is what it sends as SNI).
    async fn point_name(&self, status: &Status) {
        let Some(name) = &self.settings.dns else { return };
        let ip = status.public_ip.as_deref().and_then(|ip| ip.parse().ok());
        let (State::Running, Some(ip)) = (status.state, ip) else { return };
        match self.route53.point(name, ip).await {
            Ok(()) => info!(name = %name.name, %ip, "server name pointed at the task"),
            Err(e) => error!(error = %e, name = %name.name, "pointing the server name at the task failed"),
        }
    }

    async fn status_with(&self, desired: i32) -> Result<Status, ControlError> {
        let tasks = self.service_tasks().await?;
        let running: Vec<&Task> = tasks.iter().filter(|t| t.last_status() == Some("RUNNING")).collect();
        let pending = (tasks.len() - running.len()) as i32;
        // The most recently started running task is the one agents should use.
        let task = running.iter().copied().max_by_key(|t| t.started_at().map(|d| d.secs()).unwrap_or(0));
        let public_ip = match task.and_then(network_interface) {
            Some(eni) => self.ec2.public_ip(&eni).await?,
            None => None,
        };
        let state = match (desired, task, &public_ip) {
            (0, _, _) if tasks.is_empty() => State::Stopped,
            (0, _, _) => State::Stopping,
            (_, Some(_), Some(_)) => State::Running,
            _ => State::Starting,
        };
        Ok(Status {
            state,
            desired,
            running: running.len() as i32,
            pending,
            task_arn: task.and_then(|t| t.task_arn()).map(str::to_string),
            public_ip,
            started_at: task
                .and_then(|t| t.started_at())
                .and_then(|d| d.fmt(aws_sdk_ecs::primitives::DateTimeFormat::DateTime).ok()),
        })
    }

    async fn set_desired(&self, count: i32) -> Result<(), ControlError> {
        self.ecs
            .update_service()
            .cluster(&self.settings.cluster)
            .service(&self.settings.service)
            .desired_count(count)
            .send()
            .await
            .map_err(ecs_error)?;
        Ok(())
    }

    /// In `caller` mode, admits `caller` to the server's group (unless it
    /// is already) and revokes the oldest of Fluidity's other entries beyond
    /// [`MAX_CALLERS`]; a fixed-CIDR stack is never touched.
    async fn admit_caller(&self, caller: Option<IpAddr>) -> Result<(), ControlError> {
        let Some(group) = &self.settings.caller_ingress_group else { return Ok(()) };
        let Some(caller) = caller else {
            warn!("the request carries no source address: no address admitted");
            return Ok(());
        };
        let port = self.settings.server_port;
        let rules = self.ec2.caller_rules(group).await?;
        let this = |r: &CallerRule| r.port == port && r.admits(caller);
        if rules.iter().any(this) {
            // Its time is now: the most recently used address is revoked last.
            self.ec2.refresh(group, port, caller, &rfc3339_now()).await?;
        } else {
            self.ec2.admit(group, port, caller, &rfc3339_now()).await?;
            info!(%caller, %group, port, "caller admitted");
        }
        // Entries on another port are left from before a ServerPort change.
        let (mut others, mut stale): (Vec<CallerRule>, Vec<CallerRule>) =
            rules.into_iter().filter(|r| !this(r)).partition(|r| r.port == port);
        others.sort_by(|a, b| b.since().cmp(a.since()));
        stale.extend(others.split_off(others.len().min(MAX_CALLERS - 1)));
        self.ec2.revoke(group, &stale).await?;
        if !stale.is_empty() {
            info!(revoked = stale.len(), "oldest callers revoked");
        }
        Ok(())
    }

    /// In `caller` mode, revokes every address Wake admitted.
    async fn revoke_callers(&self) -> Result<(), ControlError> {
        let Some(group) = &self.settings.caller_ingress_group else { return Ok(()) };
        let rules = self.ec2.caller_rules(group).await?;
        self.ec2.revoke(group, &rules).await?;
        if !rules.is_empty() {
            info!(revoked = rules.len(), %group, "callers revoked");
        }
        Ok(())
    }

    /// After the server was stopped: the callers revoked and, with `park`,
    /// the name pointed at [`PARKED`]. Best effort: the stop has happened
    /// whatever these calls answer, so a failure is logged, not returned
    /// (a leftover entry is revoked at the next sleep check).
    async fn close_up(&self, park: bool) {
        if let Err(e) = self.revoke_callers().await {
            error!(error = %e, "the server is stopped, but revoking the callers' addresses failed");
        }
        let Some(name) = self.settings.dns.as_ref().filter(|_| park) else { return };
        match self.route53.point(name, PARKED).await {
            Ok(()) => info!(name = %name.name, "server name parked"),
            Err(e) => error!(error = %e, name = %name.name, "the server is stopped, but parking its name failed"),
        }
    }

    /// Admits `caller` (in `caller` mode), then desired 0 → 1; anything else
    /// is left alone. Then waits, up to `wake_wait`, until the task runs with
    /// a public IP, so that one call usually brings the agent what it needs
    /// (the API's quota is small). Returns whether the desired count
    /// changed, and the status.
    pub async fn wake(&self, caller: Option<IpAddr>) -> Result<(bool, Status), ControlError> {
        let started = tokio::time::Instant::now();
        self.admit_caller(caller).await?;
        let mut desired = self.desired().await?;
        let changed = desired == 0;
        if changed {
            self.set_desired(1).await?;
            info!(service = %self.settings.service, "woken: desired count 0 -> 1");
            desired = 1;
        }
        // The first look is unbounded (the answer needs a status); later
        // ones must end by the deadline, whatever the SDK's retries do, so
        // the answer beats API Gateway's 29 s limit.
        let deadline = started + self.settings.wake_wait;
        let mut status = self.status_with(desired).await?;
        while status.state != State::Running && tokio::time::Instant::now() + WAKE_POLL < deadline {
            tokio::time::sleep(WAKE_POLL).await;
            match tokio::time::timeout_at(deadline, self.status_with(desired)).await {
                Ok(next) => status = next?,
                Err(_) => break,
            }
        }
        self.point_name(&status).await;
        Ok((changed, status))
    }

    /// Desired → 0 (idempotent); then every admitted caller is revoked and
    /// the name parked. Returns whether the count changed.
    pub async fn kill(&self) -> Result<(bool, Status), ControlError> {
        let desired = self.desired().await?;
        if desired != 0 {
            self.set_desired(0).await?;
            info!(service = %self.settings.service, from = desired, "killed: desired count -> 0");
        }
        self.close_up(true).await;
        Ok((desired != 0, self.status_with(0).await?))
    }

    /// Reads the idle window's metrics and scales to 0 if the decision says so.
    pub async fn sleep(&self) -> Result<Decision, ControlError> {
        let desired = self.desired().await?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let tasks = if desired == 0 { vec![] } else { self.service_tasks().await? };
        let task_started_at =
            tasks.iter().filter_map(|t| t.started_at().or(t.created_at()).map(|d| d.secs().max(0) as u64)).max();
        let (max_connections, last_activity) =
            if desired == 0 { (None, None) } else { self.window_metrics(now).await? };
        let decision = decide(&Observation {
            desired,
            now,
            task_started_at,
            max_connections,
            last_activity,
            idle_threshold: self.settings.idle_threshold,
        });
        info!(?decision, "sleep check");
        match &decision {
            Decision::Sleep(_) => {
                self.set_desired(0).await?;
                self.close_up(true).await;
            }
            // Whatever an earlier stop failed to revoke.
            Decision::AlreadyStopped => self.close_up(false).await,
            Decision::Stay(_) => {}
        }
        Ok(decision)
    }

    /// Maxima of ActiveConnections and LastActivityEpochSeconds over the window.
    async fn window_metrics(&self, now: u64) -> Result<(Option<f64>, Option<f64>), ControlError> {
        let window = self.settings.idle_threshold.as_secs();
        let dims = vec![
            Dimension::builder().name(SERVICE_DIMENSION).value(&self.settings.service).build(),
            Dimension::builder().name(CLUSTER_DIMENSION).value(&self.settings.cluster).build(),
        ];
        let query = |id: &str, name: &str| {
            MetricDataQuery::builder()
                .id(id)
                .metric_stat(
                    MetricStat::builder()
                        .metric(
                            Metric::builder()
                                .namespace(&self.settings.namespace)
                                .metric_name(name)
                                .set_dimensions(Some(dims.clone()))
                                .build(),
                        )
                        .period(60)
                        .stat("Maximum")
                        .build(),
                )
                .build()
        };
        let output = self
            .cloudwatch
            .get_metric_data()
            .metric_data_queries(query("connections", ACTIVE_CONNECTIONS))
            .metric_data_queries(query("activity", LAST_ACTIVITY))
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs((now - window) as i64))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(now as i64 + 60))
            .send()
            .await
            .map_err(|e| ControlError::CloudWatch(aws_sdk_cloudwatch::error::DisplayErrorContext(e).to_string()))?;
        let max_of = |id: &str| {
            output
                .metric_data_results()
                .iter()
                .filter(|r| r.id() == Some(id))
                .flat_map(|r| r.values().iter().copied())
                .reduce(f64::max)
        };
        Ok((max_of("connections"), max_of("activity")))
    }
}

/// Now as RFC 3339 UTC with milliseconds (`2026-12-07T00:50:29.042Z`):
/// fixed width, so the text sorts by time.
fn rfc3339_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = aws_sdk_ecs::primitives::DateTime::from_secs(now.as_secs() as i64)
        .fmt(aws_sdk_ecs::primitives::DateTimeFormat::DateTime)
        .unwrap_or_default();
    format!("{}.{:03}Z", seconds.trim_end_matches('Z'), now.subsec_millis())
}

/// The ENI id from a task's ElasticNetworkInterface attachment.
fn network_interface(task: &Task) -> Option<String> {
    task.attachments()
        .iter()
        .filter(|a| a.r#type() == Some("ElasticNetworkInterface"))
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("networkInterfaceId"))
        .and_then(|d| d.value())
        .map(str::to_string)
}
