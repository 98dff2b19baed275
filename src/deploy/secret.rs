//! The server's certificates in Secrets Manager: the deploy tool reads
//! `ca.crt`, `server.crt` and `server.key` from the certificate directory,
//! checks them as the server would, and keeps them in one secret per
//! environment (`fluidity-<env>-server-tls`, JSON keys `ca_crt`,
//! `server_crt`, `server_key`). The Fargate stack gets the secret's ARN and
//! version; ECS injects the three values as `FLUIDITY_TLS_*_PEM` when a task
//! starts, so the image needs no certificate and a pure Nix build deploys.
//!
//! Each call is a signed JSON request ([`crate::sigv4`]) rather than the
//! Secrets Manager SDK crate: four calls do not justify another SDK build.
//! Nothing here prints or logs the secret's value.

use std::path::Path;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use super::aws::Clients;
use crate::config::ConfigError;
use crate::tls::{PemSource, TlsSources};

/// The secret's name for environment `env`.
pub fn name(env: &str) -> String {
    format!("fluidity-{env}-server-tls")
}

/// The three PEM texts, checked; never printed (`Debug` redacts).
pub struct ServerTls(Value);

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls(<redacted>)")
    }
}

impl ServerTls {
    /// Reads and checks `ca.crt`, `server.crt` and `server.key` in `dir`
    /// (readable PEM, the key matches the certificate, within its validity).
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let file = |name: &str| PemSource::File(dir.join(name));
        let sources = TlsSources { cert: file("server.crt"), key: file("server.key"), ca: file("ca.crt") };
        let fix = format!(
            "write them with `fluidity-certs --dir {}` (or point --certs-dir / FLUIDITY_CERTS_DIR at them)",
            dir.display()
        );
        let material = crate::tls::TlsMaterial::load(&sources, "certs")
            .map_err(|e| ConfigError::new("--certs-dir", e.to_string(), fix.clone()))?;
        material
            .server_config()
            .map_err(|e| ConfigError::new("--certs-dir", format!("{} cannot serve TLS: {e}", dir.display()), fix))?;
        let read = |source: &PemSource, key| source.read(key);
        Ok(Self(json!({
            "ca_crt": read(&sources.ca, "certs.ca")?,
            "server_crt": read(&sources.cert, "certs.cert")?,
            "server_key": read(&sources.key, "certs.key")?,
        })))
    }
}

/// Where the secret stands after [`store`].
pub struct Stored {
    pub arn: String,
    pub version: String,
    /// "created", "updated" or "unchanged".
    pub change: &'static str,
}

/// Creates or updates the secret `name` to hold `tls`; unchanged material
/// makes no new version (and so no new task definition).
pub async fn store(clients: &Clients, name: &str, tls: &ServerTls) -> anyhow::Result<Stored> {
    let value = tls.0.to_string();
    let existing = match describe(clients, name).await? {
        Some(described) => described,
        None => {
            let description = "Fluidity server CA, certificate and key (written by fluidity-deploy)";
            let token = request_token()?;
            let created = call(
                clients,
                "CreateSecret",
                json!({ "Name": name, "Description": description, "SecretString": value, "ClientRequestToken": token }),
            )
            .await?;
            return Ok(Stored {
                arn: text(&created, "ARN")?,
                version: text(&created, "VersionId")?,
                change: "created",
            });
        }
    };
    let arn = text(&existing, "ARN")?;
    if existing.get("DeletedDate").is_some_and(|d| !d.is_null()) {
        // Scheduled for deletion by hand: bring it back rather than fail.
        call(clients, "RestoreSecret", json!({ "SecretId": arn })).await?;
    }
    let current = call(clients, "GetSecretValue", json!({ "SecretId": arn })).await?;
    if current["SecretString"].as_str() == Some(value.as_str()) {
        return Ok(Stored { version: text(&current, "VersionId")?, arn, change: "unchanged" });
    }
    let put_input = json!({ "SecretId": arn, "SecretString": value, "ClientRequestToken": request_token()? });
    let put = call(clients, "PutSecretValue", put_input).await?;
    Ok(Stored { version: text(&put, "VersionId")?, arn, change: "updated" })
}

/// The secret's ARN and current version, if it exists (read only: dry runs).
pub async fn current(clients: &Clients, name: &str) -> anyhow::Result<Option<(String, String)>> {
    let Some(described) = describe(clients, name).await? else { return Ok(None) };
    let arn = text(&described, "ARN")?;
    let current = described["VersionIdsToStages"]
        .as_object()
        .and_then(|versions| {
            versions.iter().find(|(_, stages)| stages.as_array().is_some_and(|s| s.iter().any(|s| s == "AWSCURRENT")))
        })
        .map(|(version, _)| version.clone())
        .unwrap_or_default();
    Ok(Some((arn, current)))
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

/// A fresh `ClientRequestToken` (32 hex characters; the API takes 32 to 64).
/// The SDKs fill this idempotency token for their callers; a request signed
/// by hand must carry it, or AWS answers "You must provide a
/// ClientRequestToken value" (Secrets Manager API Reference, CreateSecret and
/// PutSecretValue; the botocore model marks it `idempotencyToken`). Random,
/// not a hash of the value: a version made earlier with the same value and
/// token would make AWS ignore the request instead of making it current.
fn request_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no random bytes for the Secrets Manager request token"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn text(answer: &Value, field: &str) -> anyhow::Result<String> {
    answer[field].as_str().map(str::to_owned).with_context(|| format!("Secrets Manager answered without {field}"))
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
