//! Region and credentials for the server's one AWS call (PutMetricData),
//! without the SDK's credential chain and the SDK crates it would build:
//!
//! 1. static keys from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
//!    `AWS_SESSION_TOKEN` (a laptop, a test);
//! 2. otherwise the ECS task role, from the container credentials endpoint:
//!    `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` on 169.254.170.2 (what ECS
//!    sets on Fargate), or `AWS_CONTAINER_CREDENTIALS_FULL_URI` with the
//!    token in `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN`. Fetched credentials are kept until
//!    five minutes before their `Expiration`.
//!
//! The region is `AWS_REGION`, else `AWS_DEFAULT_REGION`. Everything is read
//! through a lookup function, so tests pass a map instead of the process
//! environment.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use bytes::Bytes;
use http_body_util::Full;

use crate::http_client::OneShot;

/// Where ECS serves a task's role credentials (RELATIVE_URI is a path on it).
const ECS_CREDENTIALS_HOST: &str = "http://169.254.170.2";

/// The region, if the environment names one.
pub fn region(lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"].into_iter().find_map(|name| lookup(name).filter(|v| !v.is_empty()))
}

/// The credential source the environment describes, or why there is none.
pub fn credentials(lookup: &dyn Fn(&str) -> Option<String>) -> Result<SharedCredentialsProvider, String> {
    let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
    if let (Some(key), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        let static_keys = Credentials::new(key, secret, var("AWS_SESSION_TOKEN"), None, "environment");
        return Ok(SharedCredentialsProvider::new(static_keys));
    }
    let uri = match (var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"), var("AWS_CONTAINER_CREDENTIALS_FULL_URI")) {
        (Some(path), _) => format!("{ECS_CREDENTIALS_HOST}{path}"),
        (None, Some(full)) => checked_full_uri(&full)?,
        (None, None) => {
            return Err("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run as an ECS task with a task role".into());
        }
    };
    let token = match (var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"), var("AWS_CONTAINER_AUTHORIZATION_TOKEN")) {
        (Some(file), _) => Token::File(file),
        (None, Some(token)) => Token::Value(token),
        (None, None) => Token::None,
    };
    let client = OneShot::new().map_err(|e| e.to_string())?;
    Ok(SharedCredentialsProvider::new(TaskRole { uri, token, client, cached: tokio::sync::Mutex::new(None) }))
}

/// The token is sent to `AWS_CONTAINER_CREDENTIALS_FULL_URI`: only over
/// HTTPS, or to this host or the ECS/EKS agent addresses (as the AWS SDKs
/// allow), never in clear text across a network.
fn checked_full_uri(full: &str) -> Result<String, String> {
    let uri: http::Uri = full.parse().map_err(|e| format!("AWS_CONTAINER_CREDENTIALS_FULL_URI {full}: {e}"))?;
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let local = host == "localhost"
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| {
            ip.is_loopback() || ["169.254.170.2", "169.254.170.23", "fd00:ec2::23"].contains(&ip.to_string().as_str())
        });
    match uri.scheme_str() {
        Some("https") => Ok(full.to_owned()),
        Some("http") if local => Ok(full.to_owned()),
        _ => Err(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI {full} must be https, or http to this host or the ECS agent (169.254.170.2)"
        )),
    }
}

enum Token {
    None,
    Value(String),
    /// Read on every fetch: the agent that writes it may rotate it.
    File(String),
}

/// Credentials of the ECS task role, fetched and cached.
struct TaskRole {
    uri: String,
    token: Token,
    client: OneShot,
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

impl std::fmt::Debug for TaskRole {
    // Never the token or the cached keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRole").field("uri", &self.uri).finish_non_exhaustive()
    }
}

impl TaskRole {
    async fn get(&self) -> Result<Credentials, CredentialsError> {
        let mut cached = self.cached.lock().await;
        let fresh_until = SystemTime::now() + Duration::from_secs(300);
        if let Some(credentials) = cached.as_ref()
            && credentials.expiry().is_none_or(|expiry| expiry > fresh_until)
        {
            return Ok(credentials.clone());
        }
        let fetched = self.fetch().await.map_err(CredentialsError::provider_error)?;
        *cached = Some(fetched.clone());
        Ok(fetched)
    }

    async fn fetch(&self) -> Result<Credentials, String> {
        let token = match &self.token {
            Token::None => None,
            Token::Value(token) => Some(token.clone()),
            Token::File(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read the container credentials token {path}: {e}"))?
                    .trim()
                    .to_owned(),
            ),
        };
        let mut request = http::Request::get(&self.uri);
        if let Some(token) = token {
            request = request.header(http::header::AUTHORIZATION, token);
        }
        let request = request.body(Full::new(Bytes::new())).map_err(|e| format!("bad credentials URI: {e}"))?;
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), self.client.send(request))
            .await
            .map_err(|_| format!("the container credentials endpoint {} did not answer in 5 s", self.uri))?
            .map_err(|e| format!("the container credentials endpoint {}: {e}", self.uri))?;
        if status != 200 {
            return Err(format!("the container credentials endpoint {} answered HTTP {status}", self.uri));
        }
        parse_task_credentials(&body)
    }
}

impl ProvideCredentials for TaskRole {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.get())
    }
}

/// `{"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}` as ECS serves it.
fn parse_task_credentials(body: &str) -> Result<Credentials, String> {
    let json: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("the container credentials are not JSON: {e}"))?;
    let field = |name: &str| json[name].as_str().filter(|v| !v.is_empty()).map(str::to_owned);
    let (Some(key), Some(secret)) = (field("AccessKeyId"), field("SecretAccessKey")) else {
        return Err("the container credentials lack AccessKeyId or SecretAccessKey".into());
    };
    // Without a readable expiry the keys are fetched again after 15 minutes
    // (task role credentials live for hours; this only bounds a surprise).
    let expiry = field("Expiration")
        .and_then(|text| parse_utc(&text))
        .or_else(|| Some(SystemTime::now() + Duration::from_secs(15 * 60)));
    Ok(Credentials::new(key, secret, field("Token"), expiry, "ecs-task-role"))
}

/// An RFC 3339 timestamp as ECS writes it (`2026-12-01T12:00:00Z`) → the
/// instant, or `None` for anything else.
fn parse_utc(text: &str) -> Option<SystemTime> {
    // ECS separates date and time with `T`; RFC 3339 would also take a space.
    if text.get(10..11) != Some("T") {
        return None;
    }
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(parsed.into())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn timestamps_as_ecs_writes_them() {
        let at =
            |text| parse_utc(text).and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| d.as_secs());
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(at("2026-12-01T11:26:25Z"), Some(1_796_124_385));
        assert_eq!(at("2000-02-29T23:59:59.123Z"), Some(951_868_799));
        for bad in ["2026-12-01 11:26:25Z", "2026-13-01T00:00:00Z", "2026-12-01T00:00:00", "soon"] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn region_and_source_come_from_the_environment() {
        assert_eq!(region(&lookup(&[("AWS_DEFAULT_REGION", "eu-west-1")])).as_deref(), Some("eu-west-1"));
        assert_eq!(
            region(&lookup(&[("AWS_REGION", "us-east-2"), ("AWS_DEFAULT_REGION", "x")])).as_deref(),
            Some("us-east-2")
        );
        assert_eq!(region(&lookup(&[("AWS_REGION", "")])), None);
        let none = credentials(&lookup(&[("AWS_ACCESS_KEY_ID", "")])).map(|_| ()).unwrap_err();
        assert!(none.contains("no AWS credentials"), "{none}");
        assert!(credentials(&lookup(&[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/x")])).is_ok());
        for (uri, ok) in [
            ("http://127.0.0.1:51679/creds", true),
            ("http://169.254.170.23/v1/credentials", true),
            ("https://creds.example/v1", true),
            ("http://creds.example/v1", false),
            ("http://10.0.0.5/creds", false),
        ] {
            let got = credentials(&lookup(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri)])).map(|_| ());
            assert_eq!(got.is_ok(), ok, "{uri}: {got:?}");
        }
    }

    #[test]
    fn task_credentials_are_read_with_their_expiry() {
        let body = r#"{"AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"s3cr3t","Token":"tok","Expiration":"2026-12-01T12:00:00Z"}"#;
        let credentials = parse_task_credentials(body).unwrap();
        assert_eq!(credentials.access_key_id(), "ASIAEXAMPLE");
        assert_eq!(credentials.session_token(), Some("tok"));
        assert!(credentials.expiry().is_some());
        let undated = parse_task_credentials(r#"{"AccessKeyId":"A","SecretAccessKey":"S"}"#).unwrap();
        let refetch = undated.expiry().unwrap().duration_since(SystemTime::now()).unwrap();
        assert!(refetch <= Duration::from_secs(900), "an unknown expiry is refreshed within 15 min");
        assert!(parse_task_credentials(r#"{"AccessKeyId":"A"}"#).is_err());
        assert!(parse_task_credentials("<html>").is_err());
    }
}
