//! Activity metrics to CloudWatch, which the Sleep Lambda reads to decide
//! whether the server is idle: every `interval`, `ActiveConnections` and
//! `LastActivityEpochSeconds` in the configured namespace with the
//! `ServiceName` (and `ClusterName`) dimensions. Runs beside the proxy and can
//! never block or slow it; failures are logged with backoff (first, 2nd, 4th,
//! 8th… in a row) and a last flush is made on shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
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

/// Builds a CloudWatch client from the standard AWS environment (region,
/// credentials, ECS task role), with HTTPS through rustls + ring.
pub async fn client_from_environment(endpoint_url: Option<&str>) -> Client {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let timeouts = aws_config::timeout::TimeoutConfig::builder().operation_timeout(Duration::from_secs(10)).build();
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http).timeout_config(timeouts);
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    Client::new(&loader.load().await)
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
    let mut dims = vec![Dimension::builder().name(SERVICE_DIMENSION).value(service?).build()];
    if let Some(cluster) = cluster {
        dims.push(Dimension::builder().name(CLUSTER_DIMENSION).value(cluster).build());
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
    client: Client,
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
    client: &Client,
    namespace: &str,
    dims: &[Dimension],
    stats: &Stats,
    started_secs: u64,
) -> Result<(), String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let last = stats.activity.last_activity_secs.load(Ordering::Relaxed).max(started_secs);
    let active = stats.connections_active.load(Ordering::Relaxed);
    let timestamp = aws_sdk_cloudwatch::primitives::DateTime::from_secs(now as i64);
    let datum = |name: &str, value: f64, unit: StandardUnit| {
        MetricDatum::builder()
            .metric_name(name)
            .set_dimensions(Some(dims.to_vec()))
            .value(value)
            .unit(unit)
            .timestamp(timestamp)
            .build()
    };
    client
        .put_metric_data()
        .namespace(namespace)
        .metric_data(datum(ACTIVE_CONNECTIONS, active as f64, StandardUnit::Count))
        .metric_data(datum(LAST_ACTIVITY, last as f64, StandardUnit::None))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{}", aws_sdk_cloudwatch::error::DisplayErrorContext(e)))
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
