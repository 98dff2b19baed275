//! A new task definition is run once before a deploy is called done.
//!
//! The usual deploy is made while the server sleeps: the service's
//! deployment completes at desired count 0, and a later wake starts no
//! deployment, so ECS's circuit breaker never judges the new task
//! definition, and a bad image (or certificates the task cannot read)
//! would crash-loop on every wake. So the tool runs one task of it with the
//! service's own network configuration until it is RUNNING with a healthy
//! container (the image's health check), then stops it: about a minute of
//! Fargate, a fraction of a cent. A task that stops instead is the
//! deploy's failure, and the caller rolls the stack back.
//!
//! A running service needs none of this: the update starts a deployment,
//! which the circuit breaker judges and rolls back.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_sdk_ecs::types::{LaunchType, Task};

use super::aws::{Clients, describe};

/// How long a task may take to become healthy (image pull, start, health
/// check start period and retries).
const DEADLINE: Duration = Duration::from_secs(10 * 60);

/// The tag a task definition gets once a task of it ran healthy: a deploy
/// checks any definition without it, so a check cut short (an error, ^C)
/// is made again by the next deploy rather than skipped.
const CHECKED_TAG: &str = "fluidity:checked";

/// Whether a task of `task_definition` has run healthy (it carries [`CHECKED_TAG`]).
pub async fn is_checked(clients: &Clients, task_definition: &str) -> anyhow::Result<bool> {
    let tags = clients
        .ecs
        .list_tags_for_resource()
        .resource_arn(task_definition)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the tags of {task_definition}: {}", describe(&e)))?;
    Ok(tags.tags().iter().any(|t| t.key() == Some(CHECKED_TAG)))
}

/// Records that a task of `task_definition` ran healthy.
pub async fn mark_checked(clients: &Clients, task_definition: &str) -> anyhow::Result<()> {
    let tag = aws_sdk_ecs::types::Tag::builder().key(CHECKED_TAG).value("healthy").build();
    clients
        .ecs
        .tag_resource()
        .resource_arn(task_definition)
        .tags(tag)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot tag {task_definition} as checked: {}", describe(&e)))?;
    Ok(())
}

/// What the check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A task of it ran and its container was healthy.
    Healthy,
    /// The service runs: its deployment is judged by the circuit breaker.
    JudgedByTheService,
    /// The task stopped: why, as ECS says it.
    Failed(String),
}

/// Runs one task of `task_definition` like `service`'s in `cluster`.
pub async fn task_definition(
    clients: &Clients,
    cluster: &str,
    service: &str,
    task_definition: &str,
    poll: Duration,
) -> anyhow::Result<Verdict> {
    let ecs = &clients.ecs;
    let described = ecs
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot describe service {service}: {}", describe(&e)))?;
    let found = described.services().first().with_context(|| format!("service {service} not found in {cluster}"))?;
    if found.desired_count() > 0 {
        return Ok(Verdict::JudgedByTheService);
    }
    let network = found.network_configuration().cloned().context("the service has no network configuration")?;
    let started = ecs
        .run_task()
        .cluster(cluster)
        .task_definition(task_definition)
        .launch_type(LaunchType::Fargate)
        .network_configuration(network)
        .started_by("fluidity-deploy")
        .count(1)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot run a task of {task_definition}: {}", describe(&e)))?;
    if let Some(failure) = started.failures().first() {
        return Ok(Verdict::Failed(format!(
            "ECS could not start it: {}",
            failure.reason().or(failure.detail()).unwrap_or("no reason given")
        )));
    }
    let task = started.tasks().first().and_then(Task::task_arn).context("RunTask returned no task")?.to_owned();
    let verdict = watch(clients, cluster, &task, poll).await;
    // Stopped whatever happened: it was only a check.
    let _ =
        ecs.stop_task().cluster(cluster).task(&task).reason("fluidity-deploy checked the task definition").send().await;
    verdict
}

async fn watch(clients: &Clients, cluster: &str, task: &str, poll: Duration) -> anyhow::Result<Verdict> {
    let (begun, mut said) = (Instant::now(), String::new());
    loop {
        let described = clients
            .ecs
            .describe_tasks()
            .cluster(cluster)
            .tasks(task)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot describe task {task}: {}", describe(&e)))?;
        let Some(task) = described.tasks().first() else { bail!("task {task} vanished") };
        let status = task.last_status().unwrap_or("UNKNOWN");
        if status == "STOPPED" {
            return Ok(Verdict::Failed(stopped_reason(task)));
        }
        let health = |wanted: &'static str| {
            task.containers().iter().map(move |c| c.health_status().map(|h| h.as_str() == wanted))
        };
        // ECS replaces an unhealthy task only for a service; a standalone
        // one would run on: its health check failing is the verdict.
        if health("UNHEALTHY").any(|h| h == Some(true)) {
            return Ok(Verdict::Failed(format!("its health check failed ({status})")));
        }
        let healthy = !task.containers().is_empty() && health("HEALTHY").all(|h| h == Some(true));
        if status == "RUNNING" && healthy {
            return Ok(Verdict::Healthy);
        }
        let now = format!("{status}{}", if status == "RUNNING" { ", waiting for its health check" } else { "" });
        if now != said {
            println!("  checking the new task definition: {now} ({} s)", begun.elapsed().as_secs());
            said = now;
        }
        if begun.elapsed() > DEADLINE {
            return Ok(Verdict::Failed(format!("not healthy after {} s (last: {status})", DEADLINE.as_secs())));
        }
        tokio::time::sleep(poll).await;
    }
}

/// Why a task stopped: ECS's reason, and each container's exit code and reason.
fn stopped_reason(task: &Task) -> String {
    let mut reason = task.stopped_reason().unwrap_or("stopped").to_owned();
    for container in task.containers() {
        let name = container.name().unwrap_or("container");
        if let Some(code) = container.exit_code() {
            reason += &format!("; {name} exited with {code}");
        }
        if let Some(why) = container.reason() {
            reason += &format!(" ({why})");
        }
    }
    reason
}
