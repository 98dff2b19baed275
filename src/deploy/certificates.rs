//! The server's certificates in SSM Parameter Store: the deploy tool reads
//! `ca.crt`, `server.crt` and `server.key` from the certificate directory,
//! checks them as the server would, and keeps each as a standard-tier
//! `SecureString` parameter under `/fluidity/<env>/server-tls/<hash>/` (the
//! hash is of the three files: new material is a new path). The Fargate
//! stack gets the path (`CertificateParameterPath`); ECS injects the three
//! values as `FLUIDITY_TLS_*_PEM` when a task starts, so the image needs no
//! certificate and a pure Nix build deploys.
//!
//! Why here and not Secrets Manager: standard parameters carry no monthly
//! fee, where a secret costs $0.40 a month whether the server runs or not
//! ("AWS Systems Manager pricing", "AWS Secrets Manager pricing"). Why a
//! path per content: a task definition cannot pin a parameter's version
//! (aws/containers-roadmap#636), so new material must change the names the
//! task definition reads, or a running service would pick it up only when
//! its task happened to restart.
//!
//! Each call is a signed JSON request ([`crate::sigv4`]) rather than the
//! SSM SDK crate. Nothing here prints or logs a value.

use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::aws::Clients;
use crate::config::ConfigError;
use crate::tls::{PemSource, TlsSources};

/// A standard-tier parameter's value holds at most 4 KB ("Managing
/// parameter tiers", Systems Manager User Guide); our PEMs are about 1 KB.
const STANDARD_LIMIT: usize = 4096;

/// How long a deleted parameter's name stays unusable ("After deleting a
/// parameter, wait for at least 30 seconds to create a parameter with the
/// same name", DeleteParameter, SSM API Reference).
pub const NAME_REUSE: std::time::Duration = std::time::Duration::from_secs(30);

/// The files, as the parameters under a path are named.
pub const FILES: [&str; 3] = ["ca.crt", "server.crt", "server.key"];

/// Where environment `env` keeps its certificate paths.
pub fn root(env: &str) -> String {
    format!("/fluidity/{env}/server-tls")
}

/// The three PEM texts (in [`FILES`] order), checked; never printed (`Debug` redacts).
pub struct ServerTls([String; 3]);

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
        let pems = [sources.ca.read("certs.ca")?, sources.cert.read("certs.cert")?, sources.key.read("certs.key")?];
        for (file, pem) in FILES.iter().zip(&pems) {
            if pem.len() > STANDARD_LIMIT {
                return Err(ConfigError::new(
                    "--certs-dir",
                    format!(
                        "{file} is {} bytes; a standard Parameter Store parameter holds {STANDARD_LIMIT}",
                        pem.len()
                    ),
                    "leave intermediate certificates out of server.crt (the agent trusts our CA directly), or use --certificates image",
                ));
            }
        }
        Ok(Self(pems))
    }

    /// `<root>/<first 16 hex digits of the SHA-256 of the three files>`.
    pub fn path(&self, env: &str) -> String {
        let mut hash = Sha256::new();
        for pem in &self.0 {
            hash.update((pem.len() as u64).to_be_bytes());
            hash.update(pem.as_bytes());
        }
        let digest: String = hash.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("{}/{digest}", root(env))
    }
}

/// Writes the three parameters under `path` unless they are there (the path
/// names their content): "created" or "unchanged".
pub async fn store(clients: &Clients, path: &str, tls: &ServerTls) -> anyhow::Result<&'static str> {
    let mut created = false;
    for (file, value) in FILES.iter().zip(&tls.0) {
        let input = json!({
            "Name": format!("{path}/{file}"),
            "Description": format!("Fluidity server {file} (written by fluidity-deploy)"),
            "Value": value,
            "Type": "SecureString",
            "Tier": "Standard",
            "Overwrite": false,
        });
        match call(clients, "PutParameter", input).await {
            Ok(_) => created = true,
            Err(e) if e.to_string().contains("ParameterAlreadyExists") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(if created { "created" } else { "unchanged" })
}

/// Deletes every certificate path of `env` but `keep`; how many paths went.
pub async fn prune(clients: &Clients, env: &str, keep: &[&str]) -> anyhow::Result<usize> {
    let names = names_under(clients, &root(env)).await?;
    let doomed: Vec<&String> = names.iter().filter(|n| !keep.iter().any(|k| n.starts_with(&format!("{k}/")))).collect();
    let mut paths: Vec<&str> = doomed.iter().filter_map(|n| n.rsplit_once('/').map(|(p, _)| p)).collect();
    paths.sort_unstable();
    paths.dedup();
    for chunk in doomed.chunks(10) {
        // DeleteParameters takes at most 10 names (SSM API Reference).
        call(clients, "DeleteParameters", json!({ "Names": chunk })).await?;
    }
    Ok(paths.len())
}

/// Every parameter name under `path`, all pages.
async fn names_under(clients: &Clients, path: &str) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut input = json!({ "Path": path, "Recursive": true, "WithDecryption": false, "MaxResults": 10 });
        if let Some(token) = &token {
            input["NextToken"] = json!(token);
        }
        let page = call(clients, "GetParametersByPath", input).await?;
        let found = page["Parameters"].as_array().map(Vec::as_slice).unwrap_or_default();
        names.extend(found.iter().filter_map(|p| p["Name"].as_str().map(str::to_owned)));
        match page["NextToken"].as_str() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => return Ok(names),
        }
    }
}

/// One signed SSM call.
async fn call(clients: &Clients, action: &str, input: Value) -> anyhow::Result<Value> {
    super::aws::json_call(clients, "ssm", "AmazonSSM", "SSM", action, &input).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(key: &str) -> ServerTls {
        ServerTls(["ca".into(), "cert".into(), key.into()])
    }

    #[test]
    fn the_path_follows_the_content_and_the_environment() {
        let path = tls("key").path("dev");
        assert!(path.starts_with("/fluidity/dev/server-tls/") && path.len() == "/fluidity/dev/server-tls/".len() + 16);
        assert_eq!(path, tls("key").path("dev"), "same files, same path");
        assert_ne!(path, tls("key2").path("dev"), "a new key, a new path");
        assert!(tls("key").path("prod").starts_with("/fluidity/prod/"));
        // Lengths are hashed too: moving a byte from one file to the next changes the path.
        assert_ne!(
            ServerTls(["ab".into(), "c".into(), "".into()]).path("dev"),
            ServerTls(["a".into(), "bc".into(), "".into()]).path("dev")
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert_eq!(format!("{:?}", tls("the key text")), "ServerTls(<redacted>)");
    }
}
