//! One CloudFormation stack: create or update it through a change set, wait
//! while streaming its events, delete it; read its outputs.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use aws_sdk_cloudformation::types::{Capability, ChangeSetStatus, ChangeSetType, Parameter, Stack};

use super::aws::describe;

/// How long a change set may take to be computed, and a stack operation to finish.
const CHANGE_SET_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Without new events, say that we are still waiting this often.
const QUIET_NOTICE: Duration = Duration::from_secs(30);

/// What a deploy did to one stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    NoChanges,
    /// `--dry-run`: the change set was shown and discarded.
    DryRun,
}

/// The stack as CloudFormation describes it, or `None` if it does not exist.
pub async fn find(client: &Client, name: &str) -> anyhow::Result<Option<Stack>> {
    match client.describe_stacks().stack_name(name).send().await {
        Ok(found) => Ok(found.stacks().first().cloned()),
        Err(e) if does_not_exist(&e) => Ok(None),
        Err(e) => bail!("cannot describe stack {name}: {}", describe(&e)),
    }
}

/// CloudFormation's answer for a stack or resource that is not there.
fn does_not_exist(e: &impl ProvideErrorMetadata) -> bool {
    e.code() == Some("ValidationError") && e.message().is_some_and(|m| m.contains("does not exist"))
}

fn status_of(stack: &Stack) -> &str {
    stack.stack_status().map_or("UNKNOWN", |s| s.as_str())
}

/// Whether `stack` holds resources: a stack in `REVIEW_IN_PROGRESS` was made
/// by a change set never executed (an interrupted first deploy) and is as
/// good as new (its first change set is a Create; parameters meant for an
/// update, such as keeping the desired count, do not apply).
pub fn is_live(stack: &Stack) -> bool {
    status_of(stack) != "REVIEW_IN_PROGRESS"
}

/// The change set a stack in `status` (`None`: no stack) takes, or why it
/// can take none and what to do.
fn change_set_kind(name: &str, status: Option<&str>) -> anyhow::Result<ChangeSetType> {
    match status {
        // REVIEW_IN_PROGRESS: created by a change set never executed; no resources yet.
        None | Some("REVIEW_IN_PROGRESS") => Ok(ChangeSetType::Create),
        Some(status) if status.ends_with("_IN_PROGRESS") => {
            bail!("stack {name} is busy ({status}); wait for it to finish and deploy again")
        }
        Some(status @ ("ROLLBACK_COMPLETE" | "ROLLBACK_FAILED" | "DELETE_FAILED" | "CREATE_FAILED")) => {
            bail!("stack {name} is {status} and cannot be updated; run `delete --force` and deploy again")
        }
        // CloudFormation takes no update until the rollback is continued
        // ("Continue rolling back an update", CloudFormation User Guide).
        Some(status @ ("UPDATE_ROLLBACK_FAILED" | "IMPORT_ROLLBACK_FAILED")) => bail!(
            "stack {name} is {status}: a rollback could not finish; fix what its events name, run `aws cloudformation continue-update-rollback --stack-name {name}` (with --resources-to-skip for a resource that cannot be rolled back), then deploy again"
        ),
        // Resources imported and rolled back: the template no longer matches
        // what the stack holds; an import is not something this tool makes.
        Some(status @ "IMPORT_ROLLBACK_COMPLETE") => bail!(
            "stack {name} is {status}: an import into it was rolled back; check its resources in the console (or `delete --force` it) before deploying again"
        ),
        Some(_) => Ok(ChangeSetType::Update),
    }
}

/// The stack's outputs as (key, value, description), in template order.
pub fn outputs(stack: &Stack) -> Vec<(String, String, String)> {
    stack
        .outputs()
        .iter()
        .map(|o| {
            (
                o.output_key().unwrap_or_default().to_owned(),
                o.output_value().unwrap_or_default().to_owned(),
                o.description().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The stack's template as it was last deployed (to put it back).
pub async fn template(client: &Client, name: &str) -> anyhow::Result<String> {
    let got = client
        .get_template()
        .stack_name(name)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the template of {name}: {}", describe(&e)))?;
    got.template_body().map(str::to_owned).with_context(|| format!("{name} has no template body"))
}

/// The value of one parameter of the stack (none if empty).
pub fn parameter(stack: &Stack, key: &str) -> Option<String> {
    let found = stack.parameters().iter().find(|p| p.parameter_key() == Some(key));
    found.and_then(|p| p.parameter_value()).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// The value of one output of the stack.
pub fn output(stack: &Stack, key: &str) -> Option<String> {
    stack.outputs().iter().find(|o| o.output_key() == Some(key)).and_then(|o| o.output_value()).map(str::to_owned)
}

/// The physical id of the stack's resource `logical_id`, if the stack has it.
pub async fn resource(client: &Client, stack: &str, logical_id: &str) -> anyhow::Result<Option<String>> {
    match client.describe_stack_resource().stack_name(stack).logical_resource_id(logical_id).send().await {
        Ok(found) => Ok(found.stack_resource_detail().and_then(|r| r.physical_resource_id()).map(str::to_owned)),
        Err(e) if does_not_exist(&e) => Ok(None),
        Err(e) => bail!("cannot describe resource {logical_id} of stack {stack}: {}", describe(&e)),
    }
}

/// What to deploy to one stack.
pub struct Request<'a> {
    pub name: &'a str,
    pub template_body: &'a str,
    pub parameters: Vec<(String, String)>,
    /// Applied after every successful deploy.
    pub stack_policy: &'a str,
    /// A policy for this update only (a migration that removes a resource
    /// `stack_policy` protects). `ExecuteChangeSet` takes no
    /// `StackPolicyDuringUpdateBody` (only `UpdateStack` does), so it is set
    /// before the change set runs and `stack_policy` is put back afterwards,
    /// whether the update worked or not.
    pub policy_during_update: Option<String>,
    pub dry_run: bool,
    pub poll: Duration,
}

/// Creates or updates the stack through a change set. An empty change set
/// is [`Outcome::NoChanges`]; a failed operation is an error after the
/// failing events were printed.
pub async fn deploy(client: &Client, request: &Request<'_>) -> anyhow::Result<Outcome> {
    let name = request.name;
    let existing = find(client, name).await?;
    let kind = change_set_kind(name, existing.as_ref().map(status_of))?;
    let change_set_name =
        format!("fluidity-deploy-{}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis());
    let parameters = request
        .parameters
        .iter()
        .map(|(k, v)| Parameter::builder().parameter_key(k).parameter_value(v).build())
        .collect();
    let created = client
        .create_change_set()
        .stack_name(name)
        .change_set_name(&change_set_name)
        .change_set_type(kind.clone())
        .template_body(request.template_body)
        .set_parameters(Some(parameters))
        .capabilities(Capability::CapabilityIam)
        .capabilities(Capability::CapabilityNamedIam)
        .description("fluidity deploy")
        .send()
        .await;
    let change_set = match created {
        Ok(created) => created.id().context("CloudFormation returned no change set id")?.to_owned(),
        Err(e) if is_no_changes(e.message()) => return Ok(Outcome::NoChanges),
        Err(e) => bail!("cannot create a change set for {name}: {}", describe(&e)),
    };
    let described = wait_for_change_set(client, name, &change_set, request.poll).await?;
    let changes = described.changes();
    if described.status() == Some(&ChangeSetStatus::Failed) {
        let reason = described.status_reason().unwrap_or("no reason given").to_owned();
        discard(client, name, &change_set, kind == ChangeSetType::Create).await;
        if is_no_changes(Some(&reason)) {
            return Ok(Outcome::NoChanges);
        }
        bail!("the change set for {name} failed: {reason}");
    }
    println!("  change set for {name} ({}):", if kind == ChangeSetType::Create { "new stack" } else { "update" });
    if changes.is_empty() {
        println!("    (parameter changes only; no resource list from CloudFormation)");
    }
    for change in changes {
        if let Some(r) = change.resource_change() {
            let action = r.action().map_or("?", |a| a.as_str());
            let mark = match action {
                "Add" => "+",
                "Remove" => "-",
                _ => "~",
            };
            let replacement = match r.replacement().map(|x| x.as_str()) {
                Some("True") => "  (replacement)",
                Some("Conditional") => "  (may be replaced)",
                _ => "",
            };
            println!(
                "    {mark} {action:<7} {} ({}){replacement}",
                r.logical_resource_id().unwrap_or_default(),
                r.resource_type().unwrap_or_default()
            );
        }
    }
    if request.dry_run {
        discard(client, name, &change_set, kind == ChangeSetType::Create).await;
        return Ok(Outcome::DryRun);
    }
    let temporary = request.policy_during_update.as_deref().filter(|_| kind == ChangeSetType::Update);
    if let Some(policy) = temporary {
        set_policy(client, name, policy).await.context("cannot relax the stack policy for this update")?;
    }
    let executed = execute(client, name, &change_set, described.stack_id().unwrap_or(name), request.poll).await;
    let status = match executed {
        Ok(status) if matches!(status.as_str(), "CREATE_COMPLETE" | "UPDATE_COMPLETE") => status,
        failed => {
            let outcome = match &failed {
                Ok(status) => format!("ended in {status}{}", rollback_note(status)),
                Err(e) => format!("failed: {e:#}"),
            };
            if temporary.is_some()
                && let Err(e) = set_policy(client, name, request.stack_policy).await
            {
                bail!("stack {name} {outcome}; and its stack policy could not be put back ({e:#}): deploy again");
            }
            failed?;
            bail!("stack {name} {outcome}");
        }
    };
    set_policy(client, name, request.stack_policy)
        .await
        .with_context(|| format!("stack {name} is {status} but its stack policy was not applied"))?;
    Ok(if kind == ChangeSetType::Create { Outcome::Created } else { Outcome::Updated })
}

/// Runs the change set and waits for the stack: its final status.
async fn execute(
    client: &Client,
    name: &str,
    change_set: &str,
    stack_id: &str,
    poll: Duration,
) -> anyhow::Result<String> {
    let seen = event_ids(client, stack_id).await;
    let started = SystemTime::now();
    client
        .execute_change_set()
        .stack_name(name)
        .change_set_name(change_set)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot execute the change set for {name}: {}", describe(&e)))?;
    watch(client, name, stack_id, seen, started, poll).await
}

async fn set_policy(client: &Client, name: &str, policy: &str) -> anyhow::Result<()> {
    client
        .set_stack_policy()
        .stack_name(name)
        .stack_policy_body(policy)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot set the stack policy of {name}: {}", describe(&e)))?;
    Ok(())
}

/// `policy` changed so that deleting the resources `removed` is allowed and
/// nothing else is: they leave every statement that denies `Update:Delete`,
/// and a new statement keeps denying their modification and replacement.
/// Everything else stays as protected as before.
pub fn policy_allowing_removal(policy: &str, removed: &[&str]) -> anyhow::Result<String> {
    use serde_json::{Value, json};
    let mut policy: Value = serde_json::from_str(policy).context("the stack policy is not valid JSON")?;
    let ids: Vec<String> = removed.iter().map(|id| format!("LogicalResourceId/{id}")).collect();
    let statements = policy["Statement"].as_array_mut().context("the stack policy has no Statement list")?;
    for statement in statements.iter_mut().filter(|s| s["Effect"] == "Deny") {
        let actions = match &statement["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(list) => list.iter().filter_map(|a| a.as_str().map(str::to_owned)).collect(),
            _ => vec![],
        };
        if !actions.iter().any(|a| a == "Update:Delete" || a == "Update:*") {
            continue;
        }
        if let Value::Array(resources) = &mut statement["Resource"] {
            resources.retain(|r| !r.as_str().is_some_and(|r| ids.iter().any(|id| id == r)));
        }
    }
    statements.retain(|s| s["Resource"].as_array().is_none_or(|r| !r.is_empty()));
    statements.push(json!({
        "Effect": "Deny",
        "Principal": "*",
        "Action": ["Update:Modify", "Update:Replace"],
        "Resource": ids,
    }));
    Ok(policy.to_string())
}

fn is_no_changes(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| r.contains("didn't contain changes") || r.contains("No updates are to be performed"))
}

fn rollback_note(status: &str) -> &'static str {
    match status {
        "ROLLBACK_COMPLETE" => " (creation failed and was rolled back; run `delete --force` before deploying again)",
        "UPDATE_ROLLBACK_COMPLETE" => " (the update failed and was rolled back; the stack is as it was)",
        s if s.contains("ROLLBACK_FAILED") => " (the rollback failed too; see the events above and the console)",
        _ => "",
    }
}

async fn wait_for_change_set(
    client: &Client,
    name: &str,
    change_set: &str,
    poll: Duration,
) -> anyhow::Result<aws_sdk_cloudformation::operation::describe_change_set::DescribeChangeSetOutput> {
    let deadline = Instant::now() + CHANGE_SET_TIMEOUT;
    loop {
        let described = client
            .describe_change_set()
            .stack_name(name)
            .change_set_name(change_set)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the change set for {name}: {}", describe(&e)))?;
        match described.status() {
            Some(ChangeSetStatus::CreateComplete | ChangeSetStatus::Failed) => return Ok(described),
            _ if Instant::now() > deadline => {
                bail!("the change set for {name} was not ready after {CHANGE_SET_TIMEOUT:?}")
            }
            _ => tokio::time::sleep(poll).await,
        }
    }
}

/// Deletes an unexecuted change set, and the empty stack a create-type change
/// set left behind. Best effort: a leftover is reported, not fatal.
async fn discard(client: &Client, name: &str, change_set: &str, new_stack: bool) {
    if let Err(e) = client.delete_change_set().stack_name(name).change_set_name(change_set).send().await {
        eprintln!("warning: change set {change_set} was left in place: {}", describe(&e));
    }
    if new_stack && let Err(e) = client.delete_stack().stack_name(name).send().await {
        eprintln!("warning: the empty stack {name} (REVIEW_IN_PROGRESS) was left in place: {}", describe(&e));
    }
}

/// Turns CloudFormation's termination protection on or off for the stack.
pub async fn protect(client: &Client, name: &str, on: bool) -> anyhow::Result<()> {
    client
        .update_termination_protection()
        .stack_name(name)
        .enable_termination_protection(on)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot change the termination protection of {name}: {}", describe(&e)))?;
    Ok(())
}

/// Deletes the stack and waits, lifting its termination protection first
/// (the caller was told `--force`). Returns false if it did not exist.
pub async fn delete(client: &Client, name: &str, poll: Duration) -> anyhow::Result<bool> {
    let Some(existing) = find(client, name).await? else {
        return Ok(false);
    };
    if existing.enable_termination_protection() == Some(true) {
        println!("{name}: lifting its termination protection (--force)");
        protect(client, name, false).await?;
    }
    let stack_id = existing.stack_id().unwrap_or(name).to_owned();
    let seen = event_ids(client, &stack_id).await;
    let started = SystemTime::now();
    client
        .delete_stack()
        .stack_name(name)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot delete stack {name}: {}", describe(&e)))?;
    let status = watch(client, name, &stack_id, seen, started, poll).await?;
    if status != "DELETE_COMPLETE" {
        bail!("stack {name} ended in {status}; see the failed events above");
    }
    Ok(true)
}

/// The ids of the stack's most recent events, so that waiting shows only new ones.
async fn event_ids(client: &Client, stack_id: &str) -> HashSet<String> {
    match client.describe_stack_events().stack_name(stack_id).send().await {
        Ok(page) => page.stack_events().iter().filter_map(|e| e.event_id().map(str::to_owned)).collect(),
        Err(_) => HashSet::new(),
    }
}

/// Waits until the stack leaves its `_IN_PROGRESS` state, printing each new
/// event (time since start, status, resource, reason) and, when nothing
/// happens for a while, the state being waited on. Events are read by stack
/// id (a deleted stack's are not readable by name). Returns the final
/// status; a stack that no longer exists is `DELETE_COMPLETE`.
async fn watch(
    client: &Client,
    name: &str,
    stack_id: &str,
    mut seen: HashSet<String>,
    started: SystemTime,
    poll: Duration,
) -> anyhow::Result<String> {
    let clock = Instant::now();
    // Older events than this are never new (a guard beyond the first page).
    let since = started.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64() - 60.0;
    let mut failures = Vec::new();
    let mut last_news = Instant::now();
    loop {
        // Events are best effort; the stack's status decides.
        if let Ok(page) = client.describe_stack_events().stack_name(stack_id).send().await {
            let mut fresh: Vec<_> = page
                .stack_events()
                .iter()
                .filter(|e| e.timestamp().is_some_and(|t| t.as_secs_f64() >= since))
                .filter(|e| seen.insert(e.event_id().unwrap_or_default().to_owned()))
                .collect();
            fresh.reverse();
            for event in fresh {
                let status = event.resource_status().map_or("?", |s| s.as_str());
                let reason = event.resource_status_reason().unwrap_or_default();
                let line = format!(
                    "{status:<20} {} ({}){}{reason}",
                    event.logical_resource_id().unwrap_or_default(),
                    event.resource_type().unwrap_or_default(),
                    if reason.is_empty() { "" } else { ": " },
                );
                println!("  [{:>4}s] {line}", clock.elapsed().as_secs());
                if status.ends_with("_FAILED") {
                    failures.push(line);
                }
                last_news = Instant::now();
            }
        }
        let status = match find(client, name).await? {
            None => "DELETE_COMPLETE".to_owned(),
            Some(stack) => status_of(&stack).to_owned(),
        };
        if !status.ends_with("_IN_PROGRESS") {
            if !failures.is_empty()
                && !matches!(status.as_str(), "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "DELETE_COMPLETE")
            {
                eprintln!("failed events of {name}:");
                for line in &failures {
                    eprintln!("  {line}");
                }
            }
            return Ok(status);
        }
        if clock.elapsed() > OPERATION_TIMEOUT {
            bail!(
                "stack {name} is still {status} after {} minutes; it goes on without us",
                OPERATION_TIMEOUT.as_secs() / 60
            );
        }
        if last_news.elapsed() >= QUIET_NOTICE {
            println!("  [{:>4}s] still {status}…", clock.elapsed().as_secs());
            last_news = Instant::now();
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = include_str!("../../cloudformation/stack-policy.json");

    fn denies(policy: &serde_json::Value, action: &str, id: &str) -> bool {
        let resource = format!("LogicalResourceId/{id}");
        policy["Statement"].as_array().unwrap().iter().any(|s| {
            s["Effect"] == "Deny"
                && (s["Action"] == action || s["Action"].as_array().is_some_and(|a| a.iter().any(|x| x == action)))
                && s["Resource"].as_array().is_some_and(|r| r.iter().any(|x| x == resource.as_str()))
        })
    }

    #[test]
    fn the_migration_policy_allows_exactly_the_old_roles_removal() {
        let before: serde_json::Value = serde_json::from_str(OURS).unwrap();
        assert!(denies(&before, "Update:Delete", "ApiGatewayLogsRole"), "the policy this migration works around");
        let during: serde_json::Value =
            serde_json::from_str(&policy_allowing_removal(OURS, &["ApiGatewayLogsRole"]).unwrap()).unwrap();
        assert!(!denies(&during, "Update:Delete", "ApiGatewayLogsRole"));
        assert!(denies(&during, "Update:Modify", "ApiGatewayLogsRole"));
        assert!(denies(&during, "Update:Replace", "ApiGatewayLogsRole"));
        for other in ["RestApi", "WakeRole", "Service", "TaskDefinition"] {
            assert!(denies(&during, "Update:Delete", other), "{other} stays protected");
        }
        assert!(denies(&during, "Update:Replace", "Cluster"));
    }

    #[test]
    fn a_policy_that_is_not_json_is_an_error() {
        assert!(policy_allowing_removal("{", &["ApiGatewayLogsRole"]).is_err());
    }

    #[test]
    fn both_ways_of_saying_no_changes_are_recognised() {
        assert!(is_no_changes(Some(
            "The submitted information didn't contain changes. Submit different information to create a change set."
        )));
        assert!(is_no_changes(Some("No updates are to be performed.")));
        assert!(!is_no_changes(Some("Template format error: Unresolved resource dependencies [X]")));
        assert!(!is_no_changes(None));
    }

    #[test]
    fn each_state_takes_the_right_change_set_or_says_what_to_do() {
        let kind = |status| change_set_kind("s", status).map_err(|e| e.to_string());
        assert_eq!(kind(None).unwrap(), ChangeSetType::Create);
        assert_eq!(kind(Some("REVIEW_IN_PROGRESS")).unwrap(), ChangeSetType::Create);
        assert_eq!(kind(Some("UPDATE_ROLLBACK_COMPLETE")).unwrap(), ChangeSetType::Update);
        assert_eq!(kind(Some("CREATE_COMPLETE")).unwrap(), ChangeSetType::Update);
        assert!(kind(Some("UPDATE_IN_PROGRESS")).unwrap_err().contains("busy"));
        assert!(kind(Some("ROLLBACK_COMPLETE")).unwrap_err().contains("delete --force"));
        for failed in ["UPDATE_ROLLBACK_FAILED", "IMPORT_ROLLBACK_FAILED"] {
            assert!(kind(Some(failed)).unwrap_err().contains("continue-update-rollback --stack-name s"), "{failed}");
        }
        assert!(kind(Some("IMPORT_ROLLBACK_COMPLETE")).unwrap_err().contains("import"));
    }

    #[test]
    fn failed_states_say_what_to_do_next() {
        assert!(rollback_note("ROLLBACK_COMPLETE").contains("delete --force"));
        assert!(rollback_note("UPDATE_ROLLBACK_COMPLETE").contains("as it was"));
        assert!(rollback_note("UPDATE_ROLLBACK_FAILED").contains("rollback failed"));
        assert_eq!(rollback_note("UPDATE_COMPLETE"), "");
    }
}
