//! The ECS service-linked role (`AWSServiceRoleForECS`), which a brand-new
//! account lacks until something creates it: without it the Fargate stack's
//! cluster or service fails with "Unable to assume the service linked role"
//! and rolls back. The ECS Developer Guide ("Using service-linked roles for
//! Amazon ECS") says the console and some APIs create it on first use, which
//! CloudFormation does not rely on; creating it first is what AWS suggests.
//!
//! One signed IAM Query call ([`crate::sigv4`]) rather than the IAM SDK
//! crate, for one call. IAM is one global service per partition: its
//! endpoint is `iam.amazonaws.com`, signed for `us-east-1`, in the standard
//! partition ([`crate::sigv4::iam_endpoint`] for the others). An existing
//! role is not an error ("has been taken").

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;

use super::aws::Clients;

/// What [`ensure_ecs_role`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum RoleState {
    Created,
    AlreadyThere,
}

/// Creates the ECS service-linked role unless the account has it.
pub async fn ensure_ecs_role(clients: &Clients) -> anyhow::Result<RoleState> {
    let body =
        Bytes::from_static(b"Action=CreateServiceLinkedRole&Version=2010-05-08&AWSServiceName=ecs.amazonaws.com");
    let (global, signing_region) = crate::sigv4::iam_endpoint(&clients.region);
    let base = match clients.shared.endpoint_url() {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => global.to_owned(),
    };
    let uri: http::Uri = format!("{base}/").parse().with_context(|| format!("bad IAM URL {base}"))?;
    let host = uri.authority().context("the IAM URL has no host")?.to_string();
    let request = http::Request::post(uri)
        .header("host", host)
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
        .body(Full::new(body.clone()))
        .context("cannot build the IAM request")?;
    let (status, text) = super::aws::signed_text(clients, "iam", signing_region, "IAM", request).await?;
    match status {
        200 => Ok(RoleState::Created),
        _ if text.contains("has been taken") => Ok(RoleState::AlreadyThere),
        _ => bail!(
            "IAM CreateServiceLinkedRole for ecs.amazonaws.com answered {status}: {}; the deploying identity needs iam:CreateServiceLinkedRole (once per account)",
            xml_message(&text)
        ),
    }
}

/// The `<Message>` of an IAM XML error, or the answer's start.
fn xml_message(text: &str) -> String {
    let message = text.split_once("<Message>").and_then(|(_, rest)| rest.split_once("</Message>")).map(|(m, _)| m);
    message.map(str::to_owned).unwrap_or_else(|| text.chars().take(200).collect())
}
