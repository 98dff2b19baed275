//! The Secrets Manager secret earlier versions kept the server's
//! certificates in (`fluidity-<env>-server-tls`). They now live in
//! Parameter Store ([`super::certificates`]), which costs nothing while the
//! server sleeps; a deploy deletes the old secret once the Fargate stack no
//! longer reads it, and `delete --force` deletes it if it is still there.
//!
//! Each call is a signed JSON request ([`crate::sigv4`]) rather than the
//! Secrets Manager SDK crate. Nothing here reads or prints the secret's value.

use serde_json::{Value, json};

use super::aws::Clients;

/// The secret's name for environment `env`.
pub fn name(env: &str) -> String {
    format!("fluidity-{env}-server-tls")
}

/// Deletes the secret at once (no recovery window): `delete --force` leaves
/// no private key behind. A missing secret is not an error.
pub async fn delete(clients: &Clients, name: &str) -> anyhow::Result<bool> {
    if describe(clients, name).await?.is_none() {
        return Ok(false);
    }
    call(clients, "DeleteSecret", json!({ "SecretId": name, "ForceDeleteWithoutRecovery": true })).await?;
    Ok(true)
}

async fn describe(clients: &Clients, name: &str) -> anyhow::Result<Option<Value>> {
    match call(clients, "DescribeSecret", json!({ "SecretId": name })).await {
        Ok(described) => Ok(Some(described)),
        Err(error) if error.to_string().contains("ResourceNotFoundException") => Ok(None),
        Err(error) => Err(error),
    }
}

/// One signed Secrets Manager call.
async fn call(clients: &Clients, action: &str, input: Value) -> anyhow::Result<Value> {
    super::aws::json_call(clients, "secretsmanager", "secretsmanager", "Secrets Manager", action, &input).await
}
