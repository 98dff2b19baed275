//! The Secrets Manager secret earlier versions kept the server's
//! certificates in (`fluidity-<env>-server-tls`). They now live in
//! Parameter Store ([`super::certificates`]), which costs nothing while the
//! server sleeps; a deploy deletes the old secret once the Fargate stack no
//! longer reads it, and `delete --force` deletes it if it is still there.
//!
//! Each call is a signed JSON request ([`crate::sigv4`]) rather than the
//! Secrets Manager SDK crate. Nothing here reads or prints the secret's value.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
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

/// One signed Secrets Manager call (JSON 1.1 protocol); its JSON answer, or
/// one line with the service's error code and message.
async fn call(clients: &Clients, action: &str, input: Value) -> anyhow::Result<Value> {
    let base = super::aws::endpoint(clients, "secretsmanager");
    let uri: http::Uri = format!("{base}/").parse().with_context(|| format!("bad Secrets Manager URL {base}"))?;
    let host = uri.authority().context("the Secrets Manager URL has no host")?.to_string();
    let body = Bytes::from(input.to_string());
    let request = http::Request::post(uri)
        .header("host", host)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", format!("secretsmanager.{action}"))
        .body(Full::new(body.clone()))
        .context("cannot build the Secrets Manager request")?;
    let (status, json) = super::aws::signed_json(clients, "secretsmanager", "Secrets Manager", request).await?;
    if status != 200 {
        let code = json["__type"].as_str().unwrap_or("error").rsplit('#').next().unwrap_or("error");
        bail!("Secrets Manager {action} answered {status}: {code}: {}", super::aws::json_message(&json));
    }
    Ok(json)
}
