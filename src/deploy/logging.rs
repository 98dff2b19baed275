//! API Gateway's logging role. A region has one account setting naming the
//! role API Gateway writes logs with, so Fluidity keeps that role in a stack
//! of its own shared by every environment of the region
//! ([`ACCOUNT_STACK`], apigateway-account.yaml).
//!
//! Installs made before that stack existed hold the role in each Lambda
//! stack ([`OLD_ROLE`], with an `AWS::ApiGateway::Account` pointing the
//! region at it), and the stack policy denies deleting it. Upgrading one
//! moves the setting over: the region's role is recognised as Fluidity's,
//! the shared stack is deployed and the region pointed at its role, then
//! the Lambda stack is updated under a policy that allows exactly that
//! role's removal ([`super::stack::policy_allowing_removal`]).

use std::time::{Duration, Instant};

use anyhow::Context;

use super::apigateway::{self, SetRole};
use super::aws::Clients;
use super::stack;

/// The stack of the region's API Gateway logging setting (apigateway-account.yaml).
pub const ACCOUNT_STACK: &str = "fluidity-apigateway-account";

/// `ApiGatewayAccountStackName` when the region's setting is someone else's.
pub const NO_SHARED_STACK: &str = "none";

/// The logging role's logical id in Lambda stacks made before the shared stack.
pub const OLD_ROLE: &str = "ApiGatewayLogsRole";

/// The shared stack a deploy goes through.
#[derive(Debug, Clone)]
pub struct Shared {
    pub name: String,
    /// Whether it exists already (the Lambda stack imports its export).
    pub exists: bool,
}

/// Whether to deploy the shared logging stack `name`: yes when the region's
/// API Gateway account setting is unset, is that stack's role, or is the
/// [`OLD_ROLE`] of an environment's Lambda stack (an install to migrate);
/// no (and say so) when it names a role someone else set, which is left
/// alone, or when the user passed `ApiGatewayAccountStackName=none`.
pub async fn shared(clients: &Clients, name: Option<&str>, env: &str) -> anyhow::Result<Option<Shared>> {
    let Some(name) = name.filter(|n| *n != NO_SHARED_STACK) else { return Ok(None) };
    let region_role = apigateway::logs_role(clients)
        .await
        .context("cannot read this region's API Gateway account setting (apigateway:GET on /account)")?;
    let existing = stack::find(&clients.cloudformation, name).await?;
    let shared = Shared { name: name.to_owned(), exists: existing.is_some() };
    let Some(region_role) = region_role else { return Ok(Some(shared)) };
    if existing.and_then(|s| stack::output(&s, "LogsRoleArn")).as_deref() == Some(region_role.as_str()) {
        return Ok(Some(shared));
    }
    for lambda in lambda_stacks() {
        if let Some(role) = stack::resource(&clients.cloudformation, &lambda, OLD_ROLE).await?
            && is_role(&region_role, &role)
        {
            println!("API Gateway logging: this region uses {lambda}'s own role; moving it to the shared stack {name}");
            return Ok(Some(shared));
        }
    }
    println!(
        "API Gateway logging: this region's account setting uses {region_role}, which Fluidity did not set; \
         leaving it alone (that role must be able to write /aws/apigateway/fluidity-{env}-access)"
    );
    Ok(None)
}

/// Every environment's Lambda stack (any of them may hold the region's role).
fn lambda_stacks() -> impl Iterator<Item = String> {
    use clap::ValueEnum;
    super::Env::value_variants().iter().map(|env| super::Stacks::of(*env).lambda)
}

/// Whether `arn` is the IAM role named `name` (a role's physical id is its name).
fn is_role(arn: &str, name: &str) -> bool {
    arn.rsplit_once(":role/").is_some_and(|(_, path)| path.rsplit('/').next() == Some(name))
}

/// How long a new role may take to become usable for the setting.
const ROLE_PROPAGATION: Duration = Duration::from_secs(120);

/// Points the region's setting at the shared stack's role unless it does
/// already. The deploy tool makes the setting itself (the stack's
/// `SetAccountSetting` is "false"): a role created moments before is
/// refused until IAM has made it usable, so this retries every `poll` for
/// up to two minutes. Returns the role the region used before, if changed.
pub async fn point_region_at(clients: &Clients, shared: &str, poll: Duration) -> anyhow::Result<Option<String>> {
    let Some(described) = stack::find(&clients.cloudformation, shared).await? else { return Ok(None) };
    let role =
        stack::output(&described, "LogsRoleArn").with_context(|| format!("{shared} has no LogsRoleArn output"))?;
    let current = apigateway::logs_role(clients).await?;
    if current.as_deref() == Some(role.as_str()) {
        return Ok(None);
    }
    let deadline = Instant::now() + ROLE_PROPAGATION;
    let mut said = false;
    loop {
        let set = apigateway::set_logs_role(clients, &role).await.context(
            "cannot point this region's API Gateway account setting at the shared role (apigateway:PATCH on /account, iam:PassRole)",
        )?;
        match set {
            SetRole::Done => return Ok(Some(current.unwrap_or_else(|| "no role".to_owned()))),
            SetRole::NotUsableYet(message) if Instant::now() < deadline => {
                if !said {
                    println!("API Gateway logging: waiting for IAM to make the new role usable ({message})…");
                    said = true;
                }
                tokio::time::sleep(poll).await;
            }
            SetRole::NotUsableYet(message) => anyhow::bail!(
                "API Gateway still refuses {role} for this region's logging after {} s: {message}; deploy again in a minute",
                ROLE_PROPAGATION.as_secs()
            ),
        }
    }
}

/// Deletes the shared stack if its creation failed (`ROLLBACK_COMPLETE`: it
/// holds nothing and exports nothing, so nothing imports it, and
/// CloudFormation takes no update of it). Whether it did.
pub async fn remove_failed(clients: &Clients, shared: &str, poll: Duration) -> anyhow::Result<bool> {
    let Some(described) = stack::find(&clients.cloudformation, shared).await? else { return Ok(false) };
    if described.stack_status().map(|s| s.as_str()) != Some("ROLLBACK_COMPLETE") {
        return Ok(false);
    }
    stack::delete(&clients.cloudformation, shared, poll).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_arn_is_matched_by_name_with_or_without_a_path() {
        assert!(is_role(
            "arn:aws:iam::123456789012:role/fluidity-dev-lambda-ApiGatewayLogsRole-AB12",
            "fluidity-dev-lambda-ApiGatewayLogsRole-AB12"
        ));
        assert!(is_role("arn:aws-cn:iam::123456789012:role/service/x-role", "x-role"));
        assert!(!is_role("arn:aws:iam::123456789012:role/x-role-2", "x-role"));
        assert!(!is_role("arn:aws:iam::123456789012:user/x-role", "x-role"));
    }
}
