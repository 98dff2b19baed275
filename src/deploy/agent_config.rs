//! The agent's configuration for a deployed environment, written at the end
//! of `deploy` so that the next command can be `fluidity-agent --config …`:
//! the control API's URL, the server's port (and its DNS name, when the
//! control plane keeps one pointed at it), the client certificate paths,
//! and the API key in a file of its own (the YAML holds no secret); both
//! are mode 0600.
//!
//! Both files are written to a temporary name and renamed into place, so a
//! symbolic link at the destination is replaced, never written through.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The first words of every configuration this tool writes.
const HEADER: &str = "# Written by fluidity-deploy";

/// What was written.
pub struct Written {
    pub config: PathBuf,
    /// The key file, when the key could be read.
    pub key: Option<PathBuf>,
    /// A configuration the user edited, left as it was (`config` is then `….yaml.new`).
    pub kept: Option<PathBuf>,
}

/// How the agent reaches this environment's server.
#[derive(Debug, Clone, Copy)]
pub struct Server<'a> {
    /// The control API's base URL (the Lambda stack's `ApiUrl`).
    pub api_url: &'a str,
    /// The port the server listens on (the Fargate stack's `ServerPort`).
    pub port: u16,
    /// The name Wake and Status point at the running server (the Lambda
    /// stack's `ServerDomainName`), for the agent to dial and send as SNI.
    pub name: Option<&'a str>,
}

/// The default configuration path for `env` (in the working directory).
pub fn default_path(env: &str) -> PathBuf {
    PathBuf::from(format!("fluidity-{env}-agent.yaml"))
}

/// Writes `config` (and the key beside it, `fluidity-<env>-api-key`).
pub fn write(
    config: &Path,
    env: &str,
    server: &Server<'_>,
    key: Option<&str>,
    certs_dir: &Path,
) -> anyhow::Result<Written> {
    let certs = std::path::absolute(certs_dir).with_context(|| format!("cannot resolve {}", certs_dir.display()))?;
    let dir = config.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let key_path = match key {
        Some(key) => {
            let path = std::path::absolute(dir.join(format!("fluidity-{env}-api-key")))
                .context("cannot resolve the key file's path")?;
            replace(&path, format!("{key}\n").as_bytes())?;
            Some(path)
        }
        None => None,
    };
    let pem = |name: &str| yaml_string(&certs.join(name).display().to_string());
    let mut text = format!(
        "{HEADER} for the {env} environment. Start the agent with:\n\
         #   fluidity-agent --config {}\n\
         lifecycle:\n  api_url: {}\n  server_port: {}\n",
        config.display(),
        yaml_string(server.api_url),
        server.port,
    );
    if let Some(name) = server.name {
        text += &format!("  server_host: {}\n", yaml_string(name));
    }
    match &key_path {
        Some(path) => text += &format!("  api_key_file: {}\n", yaml_string(&path.display().to_string())),
        None => {
            text += &format!("  # api_key: set FLUIDITY_API_KEY=$(fluidity-deploy --env {env} api-key --id KEY_ID)\n")
        }
    }
    text += &format!("tls:\n  cert: {}\n  key: {}\n  ca: {}\n", pem("client.crt"), pem("client.key"), pem("ca.crt"));
    // A configuration the user has edited (it lost the header) is kept; the
    // fresh one goes beside it.
    let edited = std::fs::read_to_string(config).is_ok_and(|old| !old.starts_with(HEADER));
    let target = if edited { config.with_extension("yaml.new") } else { config.to_path_buf() };
    replace(&target, text.as_bytes())?;
    Ok(Written { config: target, key: key_path, kept: edited.then(|| config.to_path_buf()) })
}

/// A YAML double-quoted scalar.
fn yaml_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// Writes `bytes` to a fresh private file beside `path` (mode 0600), then
/// renames it over `path`.
fn replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).context("the file needs a name")?;
    let staged = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = super::publish::write_private(&staged, bytes)
        .and_then(|()| std::fs::rename(&staged, path).with_context(|| format!("cannot write {}", path.display())));
    if written.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    written
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn writes_the_config_and_a_private_key_file_through_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("fluidity-dev-agent.yaml");
        // A link at the key's place is replaced, not followed.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("fluidity-dev-api-key")).unwrap();
        let server = Server { api_url: "https://abc.example/api", port: 443, name: None };
        let written = write(&config, "dev", &server, Some("k3y"), Path::new("/srv/certs")).unwrap();
        let key = written.key.unwrap();
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "k3y\n");
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains("api_url: \"https://abc.example/api\"\n  server_port: 443\n"), "{text}");
        assert!(!text.contains("server_host"), "{text}");
        assert!(text.contains("cert: \"/srv/certs/client.crt\""), "{text}");
        assert!(!text.contains("k3y"), "the key is not in the YAML: {text}");
        // Edited by hand: kept, and the fresh one goes beside it.
        std::fs::write(&config, "listen: 127.0.0.1:9000\n").unwrap();
        let named = Server { name: Some("tunnel.example.com"), ..server };
        let again = write(&config, "dev", &named, Some("k3y"), Path::new("/srv/certs")).unwrap();
        assert_eq!(std::fs::read_to_string(&config).unwrap(), "listen: 127.0.0.1:9000\n");
        assert_eq!(again.config, dir.path().join("fluidity-dev-agent.yaml.new"));
        assert_eq!(again.kept.as_deref(), Some(config.as_path()));
        let text = std::fs::read_to_string(&again.config).unwrap();
        assert!(text.contains("  server_port: 443\n  server_host: \"tunnel.example.com\"\n"), "{text}");
    }
}
