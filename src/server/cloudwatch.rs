//! Activity metrics to CloudWatch, which the Sleep Lambda reads to decide
//! whether the server is idle: every `interval`, `ActiveConnections` and
//! `LastActivityEpochSeconds` in the configured namespace with the
//! `ServiceName` (and `ClusterName`) dimensions. Runs beside the proxy and can
//! never block or slow it; failures are logged with backoff (first, 2nd, 4th,
//! 8th… in a row) and a last flush is made on shutdown.
//!
//! PutMetricData is one signed Query call ([`crate::sigv4::query`]) with
//! region and credentials from [`super::aws`]: the CloudWatch SDK crate and
//! the SDK's credential chain would more than double the server's build
//! and binary for this one call.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Stats;

use crate::protocol::metrics::{ACTIVE_CONNECTIONS, CLUSTER_DIMENSION, LAST_ACTIVITY, SERVICE_DIMENSION};

/// What to emit and where.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// Off unless set (`emit_metrics`).
    pub emit: bool,
    pub namespace: String,
    pub interval: Duration,
    pub service_name: Option<String>,
    pub cluster_name: Option<String>,
    /// Overrides the CloudWatch endpoint (VPC endpoints, local emulators).
    pub endpoint_url: Option<String>,
    /// `ECS_CONTAINER_METADATA_URI_V4`, to learn the names on ECS.
    pub ecs_metadata_uri: Option<String>,
}

/// A dimension: (name, value).
pub type Dimension = (String, String);

/// Where PutMetricData goes, signed with what.
#[derive(Clone)]
pub struct CloudWatch {
    endpoint: http::Uri,
    region: String,
    credentials: SharedCredentialsProvider,
    client: crate::http_client::OneShot,
}

impl CloudWatch {
    /// From the process environment (region, keys or the ECS task role),
    /// sending to `endpoint_url` if given (VPC endpoints, emulators).
    pub fn from_environment(endpoint_url: Option<&str>) -> Result<Self, String> {
        let lookup = |name: &str| std::env::var(name).ok();
        let region = super::aws::region(&lookup)
            .ok_or("no AWS region: set AWS_REGION (ECS task definitions set it from the stack)")?;
        Self::new(endpoint_url, &region, super::aws::credentials(&lookup)?)
    }

    /// With fixed keys (tests against an emulator).
    pub fn with_keys(endpoint_url: &str, region: &str, access_key: &str, secret: &str) -> Result<Self, String> {
        let keys = Credentials::new(access_key, secret, None, None, "fixed");
        Self::new(Some(endpoint_url), region, SharedCredentialsProvider::new(keys))
    }

    fn new(endpoint_url: Option<&str>, region: &str, credentials: SharedCredentialsProvider) -> Result<Self, String> {
        let endpoint = endpoint_url.map_or_else(|| crate::sigv4::endpoint("monitoring", region), str::to_owned);
        let endpoint = endpoint.parse().map_err(|e| format!("bad CloudWatch endpoint {endpoint}: {e}"))?;
        let client = crate::http_client::OneShot::new().map_err(|e| e.to_string())?;
        Ok(Self { endpoint, region: region.to_owned(), credentials, client })
    }

    /// One PutMetricData call: each `(name, value, unit)` with every dimension.
    async fn put(&self, namespace: &str, dims: &[Dimension], data: &[(&str, f64, &str)]) -> Result<(), String> {
        use crate::sigv4::urlencode;
        let mut body = format!("Action=PutMetricData&Version=2010-08-01&Namespace={}", urlencode(namespace));
        for (i, (name, value, unit)) in data.iter().enumerate() {
            let member = format!("MetricData.member.{}", i + 1);
            body += &format!("&{member}.MetricName={}&{member}.Value={value}&{member}.Unit={unit}", urlencode(name));
            for (j, (dim, dim_value)) in dims.iter().enumerate() {
                let d = format!("{member}.Dimensions.member.{}", j + 1);
                body += &format!("&{d}.Name={}&{d}.Value={}", urlencode(dim), urlencode(dim_value));
            }
        }
        let (endpoint, region) = (&self.endpoint, &self.region);
        crate::sigv4::query(&self.client, endpoint, region, "monitoring", &self.credentials, body)
            .await
            .map(|_| ())
            .map_err(|e| format!("PutMetricData: {e}"))
    }
}

/// The dimensions to publish with, from configuration or the ECS task
/// metadata endpoint. `None` when no service name can be found.
pub async fn dimensions(settings: &MetricsSettings) -> Option<Vec<Dimension>> {
    let (mut service, mut cluster) = (settings.service_name.clone(), settings.cluster_name.clone());
    if (service.is_none() || cluster.is_none())
        && let Some(uri) = &settings.ecs_metadata_uri
    {
        match ecs_task_names(uri).await {
            Ok((ecs_service, ecs_cluster)) => {
                service = service.or(ecs_service);
                cluster = cluster.or(ecs_cluster);
            }
            Err(error) => warn!(%error, "could not read the ECS task metadata"),
        }
    }
    let mut dims = vec![(SERVICE_DIMENSION.to_owned(), service?)];
    if let Some(cluster) = cluster {
        dims.push((CLUSTER_DIMENSION.to_owned(), cluster));
    }
    Some(dims)
}

/// Reads `ServiceName` and the cluster name from `{uri}/task`.
async fn ecs_task_names(uri: &str) -> Result<(Option<String>, Option<String>), String> {
    let client = crate::http_client::OneShot::new().map_err(|e| e.to_string())?;
    let request = http::Request::get(format!("{}/task", uri.trim_end_matches('/')))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| e.to_string())?;
    let (status, body) = client.send(request).await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("the task metadata endpoint answered HTTP {status}"));
    }
    let task: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let text = |key: &str| task.get(key).and_then(|v| v.as_str()).map(str::to_string);
    // "Cluster" is an ARN (…:cluster/NAME) or a bare name.
    let cluster = text("Cluster").map(|c| c.rsplit('/').next().unwrap_or(&c).to_string());
    Ok((text("ServiceName"), cluster))
}

/// Publishes until `stop` fires, then flushes once more.
pub async fn run(
    client: CloudWatch,
    settings: MetricsSettings,
    dims: Vec<Dimension>,
    stats: Arc<Stats>,
    started_secs: u64,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failures: u32 = 0;
    info!(namespace = %settings.namespace, interval = ?settings.interval, "publishing activity metrics to CloudWatch");
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        match put(&client, &settings.namespace, &dims, &stats, started_secs).await {
            Ok(()) if failures > 0 => {
                info!(after_failures = failures, "metrics flowing again");
                failures = 0;
            }
            Ok(()) => debug!("metrics published"),
            Err(error) => {
                failures = failures.saturating_add(1);
                if failures.is_power_of_two() {
                    warn!(%error, failures, "could not publish metrics; the proxy is unaffected");
                }
            }
        }
    }
    match tokio::time::timeout(Duration::from_secs(5), put(&client, &settings.namespace, &dims, &stats, started_secs))
        .await
    {
        Ok(Ok(())) => debug!("final metrics flushed"),
        Ok(Err(error)) => warn!(%error, "final metrics flush failed"),
        Err(_) => warn!("final metrics flush timed out"),
    }
}

async fn put(
    client: &CloudWatch,
    namespace: &str,
    dims: &[Dimension],
    stats: &Stats,
    started_secs: u64,
) -> Result<(), String> {
    let last = stats.activity.last_activity_secs.load(Ordering::Relaxed).max(started_secs);
    let active = stats.connections_active.load(Ordering::Relaxed);
    // No Timestamp: CloudWatch stamps each datum with the time it arrives.
    let data = [(ACTIVE_CONNECTIONS, active as f64, "Count"), (LAST_ACTIVITY, last as f64, "None")];
    match tokio::time::timeout(Duration::from_secs(10), client.put(namespace, dims, &data)).await {
        Ok(result) => result,
        Err(_) => Err("PutMetricData: no answer within 10 s".into()),
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn reads_the_names_from_the_task_metadata() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = r#"{"Cluster":"arn:aws:ecs:us-east-1:123456789012:cluster/fluidity-dev","ServiceName":"fluidity-server-dev"}"#;
        let endpoint = tokio::spawn(crate::http_client::tests::answer_once(listener, body));
        let names = super::ecs_task_names(&format!("http://{addr}/v4/abc123")).await.unwrap();
        assert_eq!(names, (Some("fluidity-server-dev".into()), Some("fluidity-dev".into())));
        let head = endpoint.await.unwrap();
        assert!(head.starts_with("GET /v4/abc123/task HTTP/1.1\r\n"), "origin form: {head}");
    }
}
