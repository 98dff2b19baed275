//! Configuration pieces shared by every component: the one-line error a user
//! sees, duration parsing, and where PEM material comes from (a file, or an
//! environment variable holding the PEM text for ECS secrets injection).
//!
//! Each component has a raw form (YAML file merged with flags and `FLUIDITY_*`
//! environment, flag > env > file > default) and a validated form built in one
//! step; see `agent::config` and `server::config`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit code for a configuration the user must fix.
pub const EXIT_CONFIG: i32 = 2;

/// A configuration mistake: which key, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: `{key}`: {problem} ({fix})")]
pub struct ConfigError {
    /// The YAML key (dotted path) at fault, or the flag for command-line-only values.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl ConfigError {
    /// Builds an error for `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { key: key.into(), problem: problem.into(), fix: fix.into() }
    }
}

/// Reads and parses a YAML configuration file; an empty file is all defaults.
pub fn load_yaml<T>(path: &Path) -> Result<T, ConfigError>
where
    T: serde::de::DeserializeOwned + Default,
{
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            "--config",
            format!("cannot read {}: {e}", path.display()),
            "pass the path of a readable YAML file",
        )
    })?;
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_yaml::from_str(&text).map_err(|e| {
        let place = e.location().map(|l| format!(" at line {}", l.line())).unwrap_or_default();
        let message = e.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message).to_string();
        ConfigError::new(
            path.display().to_string(),
            format!("invalid YAML{place}: {message}"),
            "see the configuration reference in README.md",
        )
    })
}

/// Parses `250ms`, `10s`, `5m`, `2h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 500ms, 10s, 5m or 1h"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!("unknown unit `{other}` in `{text}` (use ms, s, m or h)"));
        }
    };
    if !seconds.is_finite() || seconds > 1e9 {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A duration from the flag or environment (`arg`), else the file, else
/// `default_secs`; zero and malformed values are errors naming `key`.
pub fn merged_duration(
    key: &str,
    arg: &Option<String>,
    file: &Option<String>,
    default_secs: u64,
) -> Result<Duration, ConfigError> {
    duration_or(key, arg.as_deref().or(file.as_deref()), Duration::from_secs(default_secs))
}

/// An HTTP/2 window size merged like [`merged_duration`]: 64 KiB to 2 GiB.
pub fn merged_window(key: &str, arg: &Option<String>, file: &Option<String>, default: u64) -> Result<u32, ConfigError> {
    size_or(key, arg.as_deref().or(file.as_deref()), default, 65_535, (1 << 31) - 1).map(|v| v as u32)
}

/// Parses the optional duration at `key`, or returns `default`; zero is refused.
pub fn duration_or(key: &str, value: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let duration = parse_duration(text).map_err(|p| ConfigError::new(key, p, "write a duration such as 10s"))?;
    if duration.is_zero() {
        return Err(ConfigError::new(key, "must be greater than zero", "write a duration such as 10s"));
    }
    Ok(duration)
}

/// Parses a byte size: `65536`, `64KiB`, `8MiB`, `1GiB` (also `KB`/`MB`/`GB` as powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("`{text}` is not a size like 65536, 64KiB or 8MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit `{other}` in `{text}` (use KiB, MiB or GiB)")),
    };
    value.checked_mul(factor).ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses the optional size at `key` within `min..=max`, or returns `default`.
pub fn size_or(key: &str, value: Option<&str>, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    let Some(text) = value else { return Ok(default) };
    let size = parse_size(text).map_err(|p| ConfigError::new(key, p, "write a size such as 8MiB"))?;
    if !(min..=max).contains(&size) {
        return Err(ConfigError::new(
            key,
            format!("{size} bytes is out of range"),
            format!("use {min} to {max} bytes"),
        ));
    }
    Ok(size)
}

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; use only where it is needed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

/// Where one piece of PEM material comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A file on disk.
    File(PathBuf),
    /// PEM text taken from the named environment variable.
    Env { var: String, pem: String },
}

impl fmt::Debug for PemSource {
    // Never print PEM text: it may be a private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "File({})", path.display()),
            Self::Env { var, .. } => write!(f, "Env({var}, <redacted>)"),
        }
    }
}

impl fmt::Display for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Env { var, .. } => write!(f, "environment variable {var}"),
        }
    }
}

impl PemSource {
    /// Reads the PEM text, naming the file or variable on failure.
    pub fn read(&self, key: &str) -> Result<String, ConfigError> {
        match self {
            Self::File(path) => std::fs::read_to_string(path).map_err(|e| {
                let problem = if e.kind() == std::io::ErrorKind::NotFound {
                    format!("file {} not found", path.display())
                } else {
                    format!("cannot read {}: {e}", path.display())
                };
                ConfigError::new(
                    key,
                    problem,
                    format!("create it with fluidity-certs, or set `{key}` to an existing PEM file"),
                )
            }),
            Self::Env { pem, .. } => Ok(pem.clone()),
        }
    }
}

/// TLS file paths as written in YAML (`tls:` section).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// This side's certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// This side's private key (PEM, PKCS#8 or SEC1).
    pub key: Option<PathBuf>,
    /// The Fluidity CA certificate that signs the peer (PEM).
    pub ca: Option<PathBuf>,
}

/// TLS overrides from flags and the environment (paths and inline PEM).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct TlsArgs {
    /// Certificate chain (PEM file) presented to the peer [YAML: tls.cert]
    #[arg(long = "cert", env = "FLUIDITY_TLS_CERT", value_name = "PATH")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM file, written 0600 by fluidity-certs) [YAML: tls.key]
    #[arg(long = "key", env = "FLUIDITY_TLS_KEY", value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// CA certificate (PEM file) that must sign the peer's certificate [YAML: tls.ca]
    #[arg(long = "ca", env = "FLUIDITY_TLS_CA", value_name = "PATH")]
    pub ca: Option<PathBuf>,
    /// Certificate PEM text, for secrets injected as environment variables.
    #[arg(long, env = "FLUIDITY_TLS_CERT_PEM", hide = true, hide_env_values = true)]
    pub cert_pem: Option<String>,
    /// Private key PEM text, for secrets injected as environment variables.
    #[arg(long, env = "FLUIDITY_TLS_KEY_PEM", hide = true, hide_env_values = true)]
    pub key_pem: Option<String>,
    /// CA certificate PEM text, for secrets injected as environment variables.
    #[arg(long, env = "FLUIDITY_TLS_CA_PEM", hide = true, hide_env_values = true)]
    pub ca_pem: Option<String>,
}

/// Resolved sources of the three TLS inputs.
#[derive(Debug, Clone)]
pub struct TlsSources {
    pub cert: PemSource,
    pub key: PemSource,
    pub ca: PemSource,
}

impl TlsSources {
    /// Merges flags, environment, file and defaults: an explicit path (flag or
    /// `FLUIDITY_TLS_*`) wins, then inline PEM from the environment, then the
    /// YAML path, then `default_dir/<default name>`.
    pub fn resolve(args: &TlsArgs, file: &RawTls, default_dir: &Path, names: [&str; 3]) -> Self {
        let pick = |path: &Option<PathBuf>, pem: &Option<String>, var: &str, yaml: &Option<PathBuf>, name: &str| {
            if let Some(path) = path {
                PemSource::File(path.clone())
            } else if let Some(pem) = pem {
                PemSource::Env { var: var.to_string(), pem: pem.clone() }
            } else if let Some(path) = yaml {
                PemSource::File(path.clone())
            } else {
                PemSource::File(default_dir.join(name))
            }
        };
        Self {
            cert: pick(&args.cert, &args.cert_pem, "FLUIDITY_TLS_CERT_PEM", &file.cert, names[0]),
            key: pick(&args.key, &args.key_pem, "FLUIDITY_TLS_KEY_PEM", &file.key, names[1]),
            ca: pick(&args.ca, &args.ca_pem, "FLUIDITY_TLS_CA_PEM", &file.ca, names[2]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("250ms", Some(Duration::from_millis(250))),
            ("10s", Some(Duration::from_secs(10))),
            ("10", Some(Duration::from_secs(10))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("5m", Some(Duration::from_secs(300))),
            ("2h", Some(Duration::from_secs(7200))),
            ("ten", None),
            ("5d", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text).ok(), want, "{text}");
        }
    }

    #[test]
    fn sizes() {
        let cases = [
            ("65536", Some(65536)),
            ("64KiB", Some(65536)),
            ("8MiB", Some(8 << 20)),
            ("1gb", Some(1 << 30)),
            ("8 MiB", Some(8 << 20)),
            ("x", None),
            ("5TB", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text).ok(), want, "{text}");
        }
        assert_eq!(size_or("w", Some("1KiB"), 0, 65535, 1 << 30).unwrap_err().key, "w");
    }

    #[test]
    fn secret_is_redacted() {
        let secret = Secret::new("user:hunter2");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(secret.expose(), "user:hunter2");
    }

    #[test]
    fn zero_duration_is_refused_with_key() {
        let err = duration_or("dial_timeout", Some("0s"), Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.key, "dial_timeout");
        assert_eq!(duration_or("x", None, Duration::from_secs(3)).unwrap(), Duration::from_secs(3));
    }

    #[test]
    fn pem_source_debug_redacts() {
        let secret = "not-a-real-key-but-secret-text";
        let source = PemSource::Env { var: "FLUIDITY_TLS_KEY_PEM".into(), pem: secret.into() };
        assert!(!format!("{source:?}").contains(secret));
    }

    #[test]
    fn tls_precedence() {
        let file = RawTls { cert: Some("file.crt".into()), key: Some("file.key".into()), ca: None };
        let args = TlsArgs { cert: Some("flag.crt".into()), key_pem: Some("PEM".into()), ..TlsArgs::default() };
        let got = TlsSources::resolve(&args, &file, Path::new("certs"), ["c.crt", "c.key", "ca.crt"]);
        assert_eq!(got.cert, PemSource::File("flag.crt".into()));
        assert!(matches!(got.key, PemSource::Env { .. }));
        assert_eq!(got.ca, PemSource::File("certs/ca.crt".into()));
    }
}
