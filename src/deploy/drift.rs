//! Drift detection for one stack: start it, poll until it finishes, and list
//! every resource with its drift status (IN_SYNC, MODIFIED, DELETED, or
//! NOT_CHECKED for resource types CloudFormation cannot check).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::types::StackDriftDetectionStatus;

use super::aws::describe;

const DETECTION_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// One resource's drift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDrift {
    pub logical_id: String,
    pub resource_type: String,
    pub status: String,
    /// "Path: expected → actual" per differing property.
    pub differences: Vec<String>,
}

/// The result of one detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// DRIFTED, IN_SYNC, UNKNOWN or NOT_CHECKED.
    pub stack: String,
    pub resources: Vec<ResourceDrift>,
}

/// Runs drift detection on `stack` and waits for it (polling every `poll`).
pub async fn detect(client: &Client, stack: &str, poll: Duration) -> anyhow::Result<Report> {
    let started = client
        .detect_stack_drift()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot start drift detection: {}", describe(&e)))?;
    let id = started.stack_drift_detection_id().context("CloudFormation returned no drift detection id")?;
    let deadline = Instant::now() + DETECTION_TIMEOUT;
    let stack_status = loop {
        let progress = client
            .describe_stack_drift_detection_status()
            .stack_drift_detection_id(id)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read drift detection {id}: {}", describe(&e)))?;
        match progress.detection_status() {
            Some(StackDriftDetectionStatus::DetectionInProgress) => {
                if Instant::now() > deadline {
                    bail!("drift detection {id} still running after {} s", DETECTION_TIMEOUT.as_secs());
                }
                tokio::time::sleep(poll).await;
            }
            Some(StackDriftDetectionStatus::DetectionFailed) => {
                // Partial results are still worth showing; say why it failed.
                let reason = progress.detection_status_reason().unwrap_or("no reason given");
                eprintln!("warning: drift detection of {stack} failed in part: {reason}");
                break progress.stack_drift_status().map_or("UNKNOWN", |s| s.as_str()).to_owned();
            }
            _ => break progress.stack_drift_status().map_or("UNKNOWN", |s| s.as_str()).to_owned(),
        }
    };

    let mut checked = BTreeMap::new();
    let mut token = None;
    loop {
        let page = client
            .describe_stack_resource_drifts()
            .stack_name(stack)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot list resource drifts: {}", describe(&e)))?;
        for drift in page.stack_resource_drifts() {
            let differences = drift
                .property_differences()
                .iter()
                .map(|d| {
                    let path = d.property_path().unwrap_or_default();
                    format!(
                        "{path}: {} → {}",
                        d.expected_value().unwrap_or("(none)"),
                        d.actual_value().unwrap_or("(none)")
                    )
                })
                .collect();
            let status = drift.stack_resource_drift_status().map_or("UNKNOWN", |s| s.as_str()).to_owned();
            checked.insert(drift.logical_resource_id().unwrap_or_default().to_owned(), (status, differences));
        }
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }

    // Every resource of the stack, so the unchecked ones are listed too.
    let all = client
        .describe_stack_resources()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot list the resources of {stack}: {}", describe(&e)))?;
    let mut resources = Vec::new();
    for resource in all.stack_resources() {
        let logical_id = resource.logical_resource_id().unwrap_or_default().to_owned();
        if logical_id.is_empty() {
            continue;
        }
        let (status, differences) =
            checked.remove(&logical_id).unwrap_or_else(|| ("NOT_CHECKED".to_owned(), Vec::new()));
        resources.push(ResourceDrift {
            logical_id,
            resource_type: resource.resource_type().unwrap_or_default().to_owned(),
            status,
            differences,
        });
    }
    resources.sort_by(|a, b| a.logical_id.cmp(&b.logical_id));
    Ok(Report { stack: stack_status, resources })
}
