//! The API Gateway calls the deploy tool needs, each one signed REST call
//! made without the API Gateway SDK crate (see [`crate::sigv4`]):
//!
//! - the value of the agent's API key. CloudFormation outputs only its id
//!   (an output is readable by anyone who can describe the stack); the value
//!   comes from GetApiKey with `includeValue`;
//! - the region's account setting (GetAccount): which CloudWatch role API
//!   Gateway logs with, so that a role some other stack set is left alone;
//!   and UpdateAccount, which points it at the shared stack's role when an
//!   older install had pointed it elsewhere (see [`super::logging`]).

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;

use super::aws::Clients;

/// Reads the value of API key `id`.
pub async fn key_value(clients: &Clients, id: &str) -> anyhow::Result<String> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("{id:?} is not an API key id (letters and digits, as in the ApiKeyId output)");
    }
    let json = get(clients, &format!("/apikeys/{id}?includeValue=true"), &format!("key {id}")).await?;
    json["value"].as_str().map(str::to_owned).context("GetApiKey returned no value")
}

/// The value of the API key named exactly `name`, if there is one.
pub async fn key_value_by_name(clients: &Clients, name: &str) -> anyhow::Result<Option<String>> {
    let query = crate::sigv4::urlencode(name);
    let json =
        get(clients, &format!("/apikeys?name={query}&includeValues=true"), &format!("keys named {name}")).await?;
    let items = json["item"].as_array().map(Vec::as_slice).unwrap_or_default();
    Ok(items.iter().find(|k| k["name"] == name).and_then(|k| k["value"].as_str()).map(str::to_owned))
}

/// The CloudWatch role ARN of this region's API Gateway account setting, if set.
pub async fn logs_role(clients: &Clients) -> anyhow::Result<Option<String>> {
    let json = get(clients, "/account", "the account setting").await?;
    Ok(json["cloudwatchRoleArn"].as_str().filter(|arn| !arn.is_empty()).map(str::to_owned))
}

/// What [`set_logs_role`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum SetRole {
    Done,
    /// 400 naming the role: a role created moments ago that IAM has not made
    /// usable everywhere yet ("The role ARN does not have required
    /// permissions set to API Gateway"); worth retrying for a while
    /// (Terraform's `aws_api_gateway_account` retries exactly this).
    NotUsableYet(String),
}

/// Sets the region's account setting to the CloudWatch role `arn`.
pub async fn set_logs_role(clients: &Clients, arn: &str) -> anyhow::Result<SetRole> {
    let patch = serde_json::json!({
        "patchOperations": [{ "op": "replace", "path": "/cloudwatchRoleArn", "value": arn }]
    });
    let body = Bytes::from(patch.to_string());
    let (status, json) = send(clients, http::Method::PATCH, "/account", body).await?;
    let message = super::aws::json_message(&json);
    match status {
        200 => Ok(SetRole::Done),
        400 if message.to_ascii_lowercase().contains("role") => Ok(SetRole::NotUsableYet(message.to_owned())),
        _ => bail!("API Gateway answered {status} for the account setting: {message}"),
    }
}

/// A signed GET of `path`; the JSON answer of a 200, else one line naming `what`.
async fn get(clients: &Clients, path: &str, what: &str) -> anyhow::Result<serde_json::Value> {
    let (status, json) = send(clients, http::Method::GET, path, Bytes::new()).await?;
    if status != 200 {
        bail!("API Gateway answered {status} for {what}: {}", super::aws::json_message(&json));
    }
    Ok(json)
}

/// A signed request; the status and the JSON answer.
async fn send(
    clients: &Clients,
    method: http::Method,
    path: &str,
    body: Bytes,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let url = format!("{}{path}", super::aws::endpoint(clients, "apigateway"));
    let uri: http::Uri = url.parse().with_context(|| format!("bad API Gateway URL {url}"))?;
    let host = uri.authority().context("the API Gateway URL has no host")?.to_string();
    let mut request = http::Request::builder().method(method).uri(uri).header("host", host);
    request = request.header("accept", "application/json");
    if !body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(Full::new(body.clone())).context("cannot build the API Gateway request")?;
    super::aws::signed_json(clients, "apigateway", "API Gateway", request).await
}
